#!/bin/sh
# Download, at image build time, the hadoop-aws jar matching the Hadoop client jars inside the installed
# pyspark, and the AWS SDK v2 bundle that exact Hadoop release was built against (read from its
# hadoop-project POM), so that Spark can read and write s3a:// (MinIO). Fails the build on any mismatch.
set -eu
JARS="$1"                                    # $SPARK_HOME/jars
MAVEN="${MAVEN_REPO:-https://repo1.maven.org/maven2}"

api_jar=$(ls "$JARS"/hadoop-client-api-*.jar | head -n 1)
HADOOP_VERSION=$(basename "$api_jar" .jar | sed 's/^hadoop-client-api-//')
echo "pyspark ships Hadoop $HADOOP_VERSION"

AWS_SDK_VERSION="${AWS_SDK_VERSION:-}"
if [ -z "$AWS_SDK_VERSION" ]; then
  AWS_SDK_VERSION=$(curl -fsSL "$MAVEN/org/apache/hadoop/hadoop-project/$HADOOP_VERSION/hadoop-project-$HADOOP_VERSION.pom" \
    | sed -n 's:.*<aws-java-sdk-v2.version>\(.*\)</aws-java-sdk-v2.version>.*:\1:p' | head -n 1)
fi
[ -n "$AWS_SDK_VERSION" ] || { echo "cannot find the AWS SDK v2 version of Hadoop $HADOOP_VERSION" >&2; exit 1; }
echo "Hadoop $HADOOP_VERSION was built against AWS SDK v2 $AWS_SDK_VERSION"

fetch() {  # group path, artifact, version
  url="$MAVEN/$1/$2/$3/$2-$3.jar"
  curl -fsSL -o "$JARS/$2-$3.jar" "$url"
  curl -fsSL "$url.sha1" | cut -c1-40 > /tmp/expected.sha1
  echo "$(cat /tmp/expected.sha1)  $JARS/$2-$3.jar" | sha1sum -c -
}
fetch org/apache/hadoop hadoop-aws "$HADOOP_VERSION"
fetch software/amazon/awssdk bundle "$AWS_SDK_VERSION"
ls -l "$JARS"/hadoop-aws-*.jar "$JARS"/bundle-*.jar
