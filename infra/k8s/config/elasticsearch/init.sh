#!/bin/sh
# es-init: prepare Elasticsearch and Kibana for the shoplens logs. Idempotent.
#   1. set the kibana_system password (Kibana waits for this: healthcheck = /tmp/es-ready)
#   2. apply the ILM policy and the index template before the first log index is created
#   3. wait for Kibana, then import the data view and saved searches (overwrite=true)
set -eu
ES=http://elasticsearch:9200
KB=http://kibana:5601
AUTH="elastic:${ELASTIC_PASSWORD}"
DIR=/monitoring

until curl -fsS -u "$AUTH" "$ES/_cluster/health?wait_for_status=yellow&timeout=5s" >/dev/null; do
  echo "waiting for elasticsearch..."; sleep 2
done
curl -fsS -u "$AUTH" -H 'Content-Type: application/json' -X POST \
  "$ES/_security/user/kibana_system/_password" -d "{\"password\":\"${KIBANA_SYSTEM_PASSWORD}\"}" >/dev/null
curl -fsS -u "$AUTH" -H 'Content-Type: application/json' -X PUT \
  "$ES/_ilm/policy/shoplens-logs" --data-binary "@$DIR/elasticsearch/ilm-policy.json"; echo
curl -fsS -u "$AUTH" -H 'Content-Type: application/json' -X PUT \
  "$ES/_index_template/shoplens-logs" --data-binary "@$DIR/elasticsearch/index-template.json"; echo
touch /tmp/es-ready

until curl -fsS -u "$AUTH" "$KB/api/status" | grep -q '"level":"available"'; do
  echo "waiting for kibana..."; sleep 5
done
curl -fsS -u "$AUTH" -H 'kbn-xsrf: shoplens' -X POST "$KB/api/saved_objects/_import?overwrite=true" \
  --form "file=@$DIR/kibana/saved-objects.ndjson"; echo
echo "elasticsearch template/ILM and kibana objects are in place"
