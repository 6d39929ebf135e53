"""A REES46-like product catalogue: category taxonomy, brands and log-normal prices.

The generator needs a catalogue whose shape matches the real store (category codes such as
``electronics.smartphone``, 19-digit category ids, a third of the rows without a category code, some
products without a brand) so that the descriptive report and the segmentation see realistic inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

#: (category_code, median price, log-sd of price, relative popularity, brands, number of products).
#: An empty code stands for a category id whose code the shop never filled in (as in the real data).
_LEAVES: Final[tuple[tuple[str, float, float, float, tuple[str, ...], int], ...]] = (
    ("electronics.smartphone", 260.0, 0.75, 30.0,
     ("samsung", "apple", "xiaomi", "huawei", "oppo", "nokia", "vivo", "oneplus", "meizu", "honor"), 900),
    ("electronics.clocks", 150.0, 0.8, 4.0, ("casio", "apple", "samsung", "garmin", "xiaomi", "fossil"), 500),
    ("electronics.audio.headphone", 45.0, 0.9, 3.5, ("apple", "samsung", "sony", "jbl", "xiaomi", "sennheiser"), 500),
    ("electronics.audio.subwoofer", 120.0, 0.6, 0.4, ("pioneer", "kicx", "jbl", "sony"), 120),
    ("electronics.video.tv", 380.0, 0.7, 2.0, ("samsung", "lg", "sony", "artel", "haier", "philips"), 400),
    ("electronics.video.projector", 420.0, 0.6, 0.2, ("epson", "acer", "benq"), 80),
    ("electronics.tablet", 280.0, 0.6, 0.6, ("apple", "samsung", "lenovo", "huawei"), 200),
    ("electronics.telephone", 30.0, 0.6, 0.5, ("panasonic", "gigaset", "nokia"), 100),
    ("electronics.camera.photo", 520.0, 0.8, 0.3, ("canon", "nikon", "sony", "fujifilm"), 150),
    ("computers.notebook", 620.0, 0.55, 3.0, ("lenovo", "hp", "acer", "asus", "apple", "dell", "msi"), 700),
    ("computers.desktop", 700.0, 0.6, 1.0, ("pulser", "hp", "lenovo", "asus", "acer"), 300),
    ("computers.components.videocards", 350.0, 0.7, 0.5, ("msi", "gigabyte", "asus", "palit"), 250),
    ("computers.components.hdd", 60.0, 0.6, 0.6, ("seagate", "wd", "toshiba", "samsung"), 200),
    ("computers.peripherals.monitor", 210.0, 0.6, 0.6, ("samsung", "lg", "aoc", "dell", "philips"), 250),
    ("computers.peripherals.printer", 190.0, 0.7, 0.4, ("hp", "canon", "epson", "brother"), 150),
    ("computers.peripherals.mouse", 18.0, 0.7, 0.3, ("logitech", "a4tech", "razer", "defender"), 150),
    ("appliances.kitchen.washer", 330.0, 0.45, 1.6, ("samsung", "lg", "indesit", "bosch", "artel", "beko"), 350),
    ("appliances.kitchen.refrigerators", 480.0, 0.55, 1.2, ("samsung", "lg", "bosch", "indesit", "artel"), 350),
    ("appliances.kitchen.microwave", 75.0, 0.45, 0.4, ("samsung", "lg", "elenberg", "midea"), 120),
    ("appliances.kitchen.blender", 45.0, 0.7, 0.5, ("redmond", "polaris", "bosch", "vitek", "philips"), 200),
    ("appliances.kitchen.kettle", 22.0, 0.6, 0.4, ("redmond", "polaris", "vitek", "tefal", "scarlett"), 200),
    ("appliances.kitchen.dishwasher", 420.0, 0.4, 0.3, ("bosch", "electrolux", "midea", "weissgauff"), 120),
    ("appliances.environment.vacuum", 120.0, 0.8, 1.4, ("samsung", "philips", "dyson", "karcher", "lg", "vitek"), 350),
    ("appliances.environment.air_heater", 45.0, 0.6, 1.0, ("oasis", "ballu", "timberk", "polaris", "vitek"), 250),
    ("appliances.environment.water_heater", 140.0, 0.55, 0.6, ("ariston", "thermex", "haier", "aqua"), 200),
    ("appliances.iron", 35.0, 0.6, 0.4, ("philips", "tefal", "braun", "bosch", "polaris"), 150),
    ("appliances.sewing_machine", 160.0, 0.5, 0.3, ("janome", "brother", "singer"), 100),
    ("apparel.shoes", 70.0, 0.6, 1.2, ("respect", "nike", "adidas", "puma", "baden", "rieker"), 600),
    ("apparel.shoes.keds", 65.0, 0.5, 1.0, ("baden", "nike", "adidas", "reebok", "vans"), 500),
    ("apparel.costume", 55.0, 0.7, 0.4, ("nike", "adidas", "dauscher"), 250),
    ("apparel.trousers", 40.0, 0.6, 0.3, ("levis", "lee", "wrangler"), 250),
    ("furniture.living_room.sofa", 480.0, 0.6, 0.4, ("brw", "mebelson", "sv"), 200),
    ("furniture.living_room.cabinet", 210.0, 0.6, 0.4, ("brw", "sv", "mebelson"), 200),
    ("furniture.bedroom.bed", 260.0, 0.6, 0.3, ("brw", "sv", "askona"), 150),
    ("furniture.kitchen.table", 120.0, 0.6, 0.3, ("sv", "brw", "stolline"), 150),
    ("kids.carriage", 260.0, 0.5, 0.3, ("stokke", "chicco", "tutis", "cybex"), 150),
    ("kids.toys", 30.0, 0.9, 0.8, ("lego", "hasbro", "mattel", "playmobil"), 400),
    ("kids.skates", 60.0, 0.5, 0.2, ("tech team", "roces", "ridex"), 80),
    ("auto.accessories.player", 90.0, 0.6, 0.4, ("pioneer", "kenwood", "sony", "jvc"), 150),
    ("auto.accessories.alarm", 110.0, 0.5, 0.4, ("starline", "pandora", "sheriff"), 120),
    ("auto.accessories.videoregister", 70.0, 0.6, 0.3, ("xiaomi", "neoline", "mio"), 120),
    ("construction.tools.drill", 85.0, 0.6, 0.5, ("bosch", "makita", "dewalt", "metabo"), 250),
    ("construction.tools.saw", 110.0, 0.6, 0.3, ("bosch", "makita", "stihl", "husqvarna"), 150),
    ("construction.tools.welding", 140.0, 0.5, 0.2, ("resanta", "telwin", "svarog"), 100),
    ("sport.bicycle", 280.0, 0.6, 0.3, ("stels", "forward", "stern", "merida"), 150),
    ("sport.tennis", 45.0, 0.7, 0.1, ("wilson", "head", "babolat"), 80),
    ("accessories.bag", 40.0, 0.8, 0.3, ("samsonite", "xiaomi", "herlitz"), 200),
    ("accessories.umbrella", 20.0, 0.5, 0.1, ("zest", "doppler"), 60),
    ("country_yard.cultivator", 230.0, 0.5, 0.1, ("huter", "champion", "patriot"), 60),
    ("stationery.cartrige", 25.0, 0.6, 0.2, ("hp", "canon", "cactus"), 100),
    ("medicine.tools.tonometer", 38.0, 0.4, 0.2, ("omron", "and", "microlife"), 60),
    # Category ids without a category code (cosmetics, household goods, ...): a third of the rows.
    ("", 12.0, 0.8, 4.0, ("shiseido", "nivea", "loreal", "garnier", "estel", "kapous"), 900),
    ("", 35.0, 0.9, 3.5, ("luminarc", "tefal", "lucente", "bergner", "ikea"), 800),
    ("", 90.0, 1.0, 3.0, ("cordiant", "triangle", "michelin", "nokian", "hankook"), 700),
    ("", 150.0, 0.9, 2.5, ("creed", "chanel", "dior", "versace"), 600),
    ("", 25.0, 0.9, 2.0, ("", "nika", "sokolov", "mango"), 500),
)

#: Top-level groups whose items count as "big ticket" (the big_ticket persona shops here).
BIG_TICKET_TOPS: Final[tuple[str, ...]] = ("electronics", "appliances", "computers", "furniture")
#: Top-level groups that sell as gifts (the holiday_shopper persona shops here).
GIFT_TOPS: Final[tuple[str, ...]] = ("electronics", "kids", "apparel", "accessories", "")


@dataclass(frozen=True)
class Catalogue:
    """Products sorted by (category, price): a price quantile picks a product inside a category.

    Attributes are numpy arrays; ``cat_*`` have one entry per category, the rest one per product.
    """

    cat_code: np.ndarray  # object, "" when the shop has no code
    cat_top: np.ndarray  # object, top level ("" when no code)
    cat_id: np.ndarray  # int64, 19 digits
    cat_popularity: np.ndarray  # float64, sums to 1
    cat_start: np.ndarray  # int64, first product of the category
    cat_count: np.ndarray  # int64, number of products
    product_id: np.ndarray  # int64
    product_cat: np.ndarray  # int32
    brand: np.ndarray  # object, "" when unknown
    price_cents: np.ndarray  # int64 base price

    @property
    def n_products(self) -> int:
        return len(self.product_id)

    def categories_in(self, tops: tuple[str, ...]) -> np.ndarray:
        """Boolean mask of the categories under the given top-level groups."""
        return np.isin(self.cat_top, np.array(tops, dtype=object))


def build_catalogue(rng: np.random.Generator) -> Catalogue:
    """Draw the catalogue: ids, brands (Zipf-weighted, some missing) and log-normal prices."""
    n_cat = len(_LEAVES)
    codes = np.array([leaf[0] for leaf in _LEAVES], dtype=object)
    tops = np.array([c.split(".")[0] for c in codes], dtype=object)
    # Real category ids are 19-digit numbers near 2.05e18 (and a few near 2.1e18).
    cat_id = np.sort(rng.choice(np.arange(1_000_000, 9_000_000), size=n_cat, replace=False))
    cat_id = 2_053_013_550_000_000_000 + cat_id.astype(np.int64) * 1_000_003
    popularity = np.array([leaf[3] for leaf in _LEAVES])
    counts = np.array([leaf[5] for leaf in _LEAVES], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    product_ids, product_cats, brands, prices = [], [], [], []
    for c, (code, median, sigma, _pop, cat_brands, n) in enumerate(_LEAVES):
        # Product ids cluster by category like the real ones (1004237, 1005011 are smartphones).
        ids = (c + 1) * 1_000_000 + np.sort(rng.choice(900_000, size=n, replace=False))
        product_ids.append(ids)
        product_cats.append(np.full(n, c, dtype=np.int32))
        weights = 1.0 / np.arange(1, len(cat_brands) + 1) ** 1.1
        b = rng.choice(np.array(cat_brands, dtype=object), size=n, p=weights / weights.sum())
        no_brand = rng.random(n) < (0.25 if code == "" else 0.08)
        b[no_brand] = ""
        brands.append(b)
        cents = np.round(np.exp(rng.normal(np.log(median), sigma, size=n)) * 100).astype(np.int64)
        prices.append(np.sort(np.clip(cents, 100, 5_000_00)))
    product_id = np.concatenate(product_ids).astype(np.int64)
    return Catalogue(
        cat_code=codes,
        cat_top=tops,
        cat_id=cat_id,
        cat_popularity=popularity / popularity.sum(),
        cat_start=starts.astype(np.int64),
        cat_count=counts,
        product_id=product_id,
        product_cat=np.concatenate(product_cats),
        brand=np.concatenate(brands),
        price_cents=np.concatenate(prices),
    )
