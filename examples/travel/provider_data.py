"""The local provider server's world: a dozen cities with their airports, carriers, hotels,
attractions, climate and travel-guide pages, and the deterministic generators of flight
offers, hotel offers and daily weather from them.

Same question, same answer: every generated figure comes from a hash of its inputs (city,
route, date), never from a random source, so the tests and the offline demo always see the
same flights, prices and forecasts. The place names and coordinates are real; the hotels are
made up; prices and weather are plausible (a city's climate, a route's length), not real.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Airport:
    code: str
    name: str
    latitude: float
    longitude: float


@dataclass(frozen=True)
class Hotel:
    hotel_id: str
    chain_code: str
    name: str
    stars: int
    #: Offset from the city centre, in degrees (latitude, longitude).
    offset: tuple[float, float]
    #: A double room's usual price per night, in EUR.
    base_rate: float


@dataclass(frozen=True)
class Attraction:
    slug: str
    name: str
    category: str
    description: str
    rating: float
    free: bool = False


@dataclass(frozen=True)
class City:
    slug: str
    name: str
    country: str
    country_code: str
    admin1: str
    geoname_id: int
    city_code: str
    latitude: float
    longitude: float
    elevation: float
    population: int
    timezone: str
    airports: tuple[Airport, ...]
    carriers: tuple[str, ...]
    #: Average daily high and low (°C) and chance of rain (%), January to December.
    highs: tuple[int, ...]
    lows: tuple[int, ...]
    rain: tuple[int, ...]
    intro: str
    hotels: tuple[Hotel, ...] = ()
    attractions: tuple[Attraction, ...] = field(default=())

    @property
    def europe(self) -> bool:
        return self.timezone.startswith(("Europe/", "Atlantic/Reykjavik"))


def _hotels(code: str, *rows: tuple[str, str, int, float, float, float]) -> tuple[Hotel, ...]:
    return tuple(
        Hotel(f"{chain}{code}{101 + i * 7}", chain, name, stars, (dlat, dlon), rate)
        for i, (chain, name, stars, dlat, dlon, rate) in enumerate(rows)
    )


def _a(slug: str, name: str, category: str, description: str, rating: float,
       free: bool = False) -> Attraction:  # fmt: skip
    return Attraction(slug, name, category, description, rating, free)


# fmt: off
# One city per block: a table reads better than one value per line.
CITIES: tuple[City, ...] = (
    City(
        "lisbon", "Lisbon", "Portugal", "PT", "Lisbon", 2267057, "LIS", 38.71667, -9.13333, 45,
        517802, "Europe/Lisbon",
        (Airport("LIS", "Humberto Delgado Airport", 38.7742, -9.1342),), ("TP", "U2", "FR"),
        (15, 16, 19, 20, 22, 26, 28, 29, 27, 23, 18, 15), (8, 9, 11, 12, 14, 17, 18, 19, 18, 15, 11, 9),
        (55, 50, 40, 45, 35, 15, 5, 5, 20, 45, 55, 55),
        "Lisbon climbs seven hills above the Tagus estuary: tiled facades, yellow trams and "
        "miradouros with views over red roofs to the river.",
        _hotels("LIS", ("HS", "Alfama Riverside Hotel", 4, 0.0031, 0.0072, 142),
                ("PV", "Baixa Tram House", 3, -0.0012, -0.0025, 96),
                ("LX", "Avenida Grand Lisboa", 5, 0.0094, -0.0051, 268),
                ("ML", "Miradouro Guest Rooms", 2, 0.0047, 0.0011, 64)),
        (_a("belem-tower", "Belém Tower", "monument", "A sixteenth-century fortified tower on the "
            "Tagus, built in the Manueline style to guard the harbour.", 4.6),
         _a("jeronimos-monastery", "Jerónimos Monastery", "monument", "A vast Manueline "
            "monastery in Belém, with a two-storey cloister and the tomb of Vasco da Gama.", 4.7),
         _a("alfama", "Alfama", "neighbourhood", "The oldest quarter: steep alleys below São "
            "Jorge Castle, fado houses and the Sunday flea market.", 4.7, True),
         _a("oceanario", "Oceanário de Lisboa", "aquarium", "One of Europe's largest aquariums, "
            "built around a single central tank of open-ocean species.", 4.6)),
    ),
    City(
        "porto", "Porto", "Portugal", "PT", "Porto", 2735943, "OPO", 41.14961, -8.61099, 93,
        249633, "Europe/Lisbon",
        (Airport("OPO", "Francisco Sá Carneiro Airport", 41.2481, -8.6814),), ("TP", "FR", "U2"),
        (14, 15, 17, 18, 20, 23, 25, 25, 24, 21, 17, 14), (5, 6, 8, 9, 12, 14, 16, 16, 15, 12, 8, 6),
        (65, 60, 50, 55, 45, 25, 15, 15, 30, 55, 65, 65),
        "Porto tumbles down granite slopes to the Douro, where rabelo boats once carried port "
        "wine to the cellars of Vila Nova de Gaia.",
        _hotels("OPO", ("HS", "Ribeira Quay Hotel", 4, -0.0068, 0.0021, 128),
                ("PV", "Bolhão Market Rooms", 3, 0.0042, 0.0031, 84),
                ("DR", "Douro Terrace Suites", 5, -0.0071, 0.0048, 231),
                ("ML", "Cedofeita Hostel & Rooms", 2, 0.0035, -0.0042, 52)),
        (_a("ribeira", "Ribeira", "neighbourhood", "Colourful riverside houses and arcades "
            "along the Douro, a UNESCO World Heritage site.", 4.7, True),
         _a("livraria-lello", "Livraria Lello", "bookshop", "A neo-Gothic bookshop from 1906 "
            "with a carved wooden staircase in crimson.", 4.4),
         _a("dom-luis-bridge", "Dom Luís I Bridge", "landmark", "A two-deck iron arch bridge "
            "over the Douro; walk the upper deck for the view.", 4.8, True),
         _a("gaia-cellars", "Port wine cellars of Vila Nova de Gaia", "food and drink",
            "Lodges across the river where port has aged for centuries; most offer tastings.",
            4.6)),
    ),
    City(
        "paris", "Paris", "France", "FR", "Île-de-France", 2988507, "PAR", 48.85341, 2.3488, 42,
        2138551, "Europe/Paris",
        (Airport("CDG", "Charles de Gaulle Airport", 49.0097, 2.5479),
         Airport("ORY", "Orly Airport", 48.7262, 2.3652)), ("AF", "U2", "VY"),
        (7, 9, 13, 16, 20, 23, 25, 25, 21, 16, 11, 8), (3, 3, 5, 8, 11, 14, 16, 16, 13, 10, 6, 4),
        (55, 50, 50, 50, 50, 45, 40, 40, 40, 50, 55, 55),
        "Paris spreads along the Seine in grand boulevards, cafés and museums, from the islands "
        "of its medieval heart to the hill of Montmartre.",
        _hotels("PAR", ("HS", "Hôtel des Deux Îles", 4, -0.0009, 0.0077, 239),
                ("PV", "Canal Saint-Martin Rooms", 3, 0.0183, 0.0174, 138),
                ("RT", "Palais Rivoli", 5, 0.0096, -0.0122, 512),
                ("ML", "Montmartre Petit Hôtel", 2, 0.0318, -0.0091, 91)),
        (_a("eiffel-tower", "Eiffel Tower", "landmark", "Gustave Eiffel's wrought-iron tower of "
            "1889; lifts and stairs climb to three levels above the Champ de Mars.", 4.7),
         _a("louvre", "Louvre Museum", "museum", "The world's most visited museum, from the Mona "
            "Lisa to the Winged Victory, in a former royal palace.", 4.7),
         _a("montmartre", "Montmartre and Sacré-Cœur", "neighbourhood", "The artists' hill, its "
            "village streets crowned by the white basilica of Sacré-Cœur.", 4.6, True),
         _a("musee-orsay", "Musée d'Orsay", "museum", "Impressionist and post-Impressionist "
            "masterpieces in a Beaux-Arts railway station.", 4.8)),
    ),
    City(
        "london", "London", "United Kingdom", "GB", "England", 2643743, "LON", 51.50853, -0.12574,
        25, 8961989, "Europe/London",
        (Airport("LHR", "Heathrow Airport", 51.4700, -0.4543),
         Airport("LGW", "Gatwick Airport", 51.1537, -0.1821)), ("BA", "U2", "FR"),
        (8, 9, 12, 15, 18, 21, 24, 23, 20, 16, 11, 9), (3, 3, 4, 6, 9, 12, 14, 14, 12, 9, 5, 3),
        (60, 55, 50, 50, 45, 45, 40, 45, 45, 55, 60, 60),
        "London mixes royal parks, world-class museums (most of them free) and markets along "
        "the Thames, from Westminster to the City.",
        _hotels("LON", ("HS", "Southwark Wharf Hotel", 4, -0.0041, -0.0188, 221),
                ("PV", "Bloomsbury Square Rooms", 3, 0.0124, -0.0027, 154),
                ("SV", "The Strand Royal", 5, -0.0002, -0.0036, 498),
                ("ML", "Camden Lock Inn", 2, 0.0307, -0.0173, 89)),
        (_a("british-museum", "British Museum", "museum", "Two million years of human history, "
            "from the Rosetta Stone to the Parthenon sculptures.", 4.7, True),
         _a("tower-of-london", "Tower of London", "castle", "A Norman fortress on the Thames, "
            "home of the Crown Jewels and the Yeomen Warders.", 4.6),
         _a("westminster-abbey", "Westminster Abbey", "church", "A Gothic abbey church where "
            "English and British monarchs have been crowned since 1066.", 4.6),
         _a("borough-market", "Borough Market", "market", "London's oldest food market, under "
            "Victorian iron beneath the railway near London Bridge.", 4.5, True)),
    ),
    City(
        "rome", "Rome", "Italy", "IT", "Lazio", 3169070, "ROM", 41.89193, 12.51133, 20, 2318895,
        "Europe/Rome",
        (Airport("FCO", "Leonardo da Vinci–Fiumicino Airport", 41.8003, 12.2389),), ("AZ", "FR", "VY"),
        (12, 14, 16, 19, 24, 28, 31, 31, 27, 22, 17, 13), (3, 4, 6, 8, 12, 16, 18, 19, 16, 12, 7, 4),
        (45, 45, 40, 40, 30, 20, 10, 15, 30, 45, 55, 50),
        "Rome layers three thousand years in one city: forums and temples, Renaissance piazzas "
        "and baroque fountains, all within a walk.",
        _hotels("ROM", ("HS", "Albergo Campo de' Fiori", 4, 0.0035, -0.0381, 205),
                ("PV", "Trastevere Garden Rooms", 3, -0.0033, -0.0419, 119),
                ("PL", "Palazzo Quirinale", 5, 0.0098, -0.0224, 455),
                ("ML", "Termini Easy Stay", 2, 0.0088, -0.0133, 72)),
        (_a("colosseum", "Colosseum", "monument", "The Flavian amphitheatre of AD 80, which held "
            "fifty thousand spectators for games and shows.", 4.8),
         _a("pantheon", "Pantheon", "monument", "A Roman temple with the largest unreinforced "
            "concrete dome ever built, open to the sky at its oculus.", 4.8),
         _a("vatican-museums", "Vatican Museums", "museum", "The popes' collections, ending in "
            "the Sistine Chapel under Michelangelo's ceiling.", 4.6),
         _a("trevi-fountain", "Trevi Fountain", "landmark", "A baroque fountain of Neptune and "
            "tritons; a coin over the shoulder promises a return.", 4.7, True)),
    ),
    City(
        "barcelona", "Barcelona", "Spain", "ES", "Catalonia", 3128760, "BCN", 41.38879, 2.15899,
        47, 1620343, "Europe/Madrid",
        (Airport("BCN", "Josep Tarradellas Barcelona–El Prat Airport", 41.2974, 2.0833),),
        ("VY", "FR", "U2"),
        (14, 15, 17, 19, 22, 26, 28, 29, 26, 22, 17, 14), (5, 6, 8, 10, 14, 18, 21, 21, 18, 14, 9, 6),
        (30, 30, 35, 40, 40, 30, 20, 25, 40, 45, 40, 35),
        "Barcelona sits between the mountains and the Mediterranean: Gaudí's modernisme, the "
        "Gothic Quarter's lanes and long city beaches.",
        _hotels("BCN", ("HS", "Hotel Passeig de Gràcia", 4, 0.0036, 0.0046, 189),
                ("PV", "Gòtic Courtyard Rooms", 3, -0.0056, 0.0163, 112),
                ("MR", "Barceloneta Mar Suites", 5, -0.0092, 0.0285, 377),
                ("ML", "Gràcia Hostal", 2, 0.0134, 0.0012, 61)),
        (_a("sagrada-familia", "Sagrada Família", "church", "Gaudí's basilica, under "
            "construction since 1882, its forest of columns lit through stained glass.", 4.8),
         _a("park-guell", "Park Güell", "park", "A hillside park of mosaic terraces and "
            "gingerbread pavilions designed by Gaudí.", 4.5),
         _a("gothic-quarter", "Gothic Quarter", "neighbourhood", "Narrow medieval streets around "
            "the cathedral, on the site of Roman Barcino.", 4.6, True),
         _a("la-boqueria", "La Boqueria", "market", "The covered market off La Rambla: fruit, "
            "jamón and tapas bars at the counters.", 4.5, True)),
    ),
    City(
        "berlin", "Berlin", "Germany", "DE", "Land Berlin", 2950159, "BER", 52.52437, 13.41053, 74,
        3426354, "Europe/Berlin",
        (Airport("BER", "Berlin Brandenburg Airport", 52.3667, 13.5033),), ("LH", "U2", "FR"),
        (3, 5, 9, 15, 20, 23, 25, 25, 20, 14, 8, 4), (-2, -2, 1, 4, 9, 12, 14, 14, 10, 6, 2, -1),
        (55, 50, 45, 45, 45, 50, 50, 45, 40, 45, 55, 55),
        "Berlin wears its history openly: the Wall's traces, grand Prussian avenues and a "
        "restless scene of galleries, clubs and lakeside parks.",
        _hotels("BER", ("HS", "Spree Loft Hotel", 4, -0.0049, 0.0078, 149),
                ("PV", "Prenzlauer Berg Rooms", 3, 0.0137, 0.0064, 98),
                ("UL", "Hotel Unter den Linden", 5, -0.0079, -0.0272, 312),
                ("ML", "Kreuzberg Backyard Inn", 2, -0.0288, 0.0082, 58)),
        (_a("brandenburg-gate", "Brandenburg Gate", "landmark", "An eighteenth-century "
            "neoclassical gate, once in the death strip, now the symbol of reunification.", 4.7,
            True),
         _a("museum-island", "Museum Island", "museum", "Five museums on an island in the Spree, "
            "from the Pergamon's altars to Nefertiti's bust.", 4.7),
         _a("east-side-gallery", "East Side Gallery", "open-air gallery", "1.3 km of the Berlin "
            "Wall covered with murals by artists from around the world.", 4.6, True),
         _a("reichstag-dome", "Reichstag dome", "landmark", "Norman Foster's glass dome over the "
            "parliament; book the free visit ahead.", 4.7, True)),
    ),
    City(
        "amsterdam", "Amsterdam", "Netherlands", "NL", "North Holland", 2759794, "AMS", 52.37403,
        4.88969, 13, 741636, "Europe/Amsterdam",
        (Airport("AMS", "Amsterdam Airport Schiphol", 52.3105, 4.7683),), ("KL", "U2", "VY"),
        (6, 7, 10, 14, 18, 20, 23, 23, 19, 15, 10, 7), (1, 1, 3, 5, 9, 11, 14, 13, 11, 8, 4, 2),
        (60, 55, 55, 45, 45, 50, 50, 55, 55, 60, 65, 65),
        "Amsterdam's seventeenth-century canal ring threads past gabled houses, bicycles and "
        "some of the finest museums of Dutch art.",
        _hotels("AMS", ("HS", "Herengracht Canal House", 4, 0.0007, -0.0042, 234),
                ("PV", "Jordaan Rooms", 3, 0.0034, -0.0082, 141),
                ("DM", "Dam Square Grand", 5, -0.0010, 0.0028, 421),
                ("ML", "Oosterpark Budget Inn", 2, -0.0138, 0.0281, 83)),
        (_a("rijksmuseum", "Rijksmuseum", "museum", "The national museum of the Netherlands: "
            "Rembrandt's Night Watch and Vermeer's Milkmaid.", 4.7),
         _a("anne-frank-house", "Anne Frank House", "museum", "The canal-side house where Anne "
            "Frank hid and wrote her diary; tickets sell out weeks ahead.", 4.6),
         _a("van-gogh-museum", "Van Gogh Museum", "museum", "The world's largest collection of "
            "Van Gogh's paintings and letters.", 4.7),
         _a("jordaan", "Jordaan and the canal ring", "neighbourhood", "Former workers' quarter "
            "of narrow canals, courtyards and brown cafés.", 4.6, True)),
    ),
    City(
        "new-york", "New York", "United States", "US", "New York", 5128581, "NYC", 40.71427,
        -74.00597, 10, 8804190, "America/New_York",
        (Airport("JFK", "John F. Kennedy International Airport", 40.6413, -73.7781),
         Airport("EWR", "Newark Liberty International Airport", 40.6895, -74.1745)), ("DL",),
        (4, 6, 10, 17, 22, 27, 29, 29, 25, 18, 12, 6), (-3, -2, 2, 7, 12, 18, 21, 20, 16, 10, 5, 0),
        (40, 40, 45, 45, 45, 40, 40, 40, 35, 35, 40, 45),
        "New York's five boroughs hold skyscrapers and brownstones, Central Park, Broadway and "
        "museums enough for a lifetime.",
        _hotels("NYC", ("HS", "Hudson Yards Hotel", 4, 0.0384, -0.0005, 329),
                ("PV", "Lower East Side Lofts", 3, 0.0034, 0.0127, 219),
                ("PK", "The Park Avenue", 5, 0.0459, 0.0258, 695),
                ("ML", "Brooklyn Bridge Inn", 2, -0.0119, 0.0143, 149)),
        (_a("central-park", "Central Park", "park", "843 acres of meadows, lakes and woodland "
            "in the middle of Manhattan.", 4.8, True),
         _a("the-met", "Metropolitan Museum of Art", "museum", "Five thousand years of art on "
            "Fifth Avenue, from the Temple of Dendur to Van Gogh.", 4.8),
         _a("statue-of-liberty", "Statue of Liberty", "monument", "Bartholdi's copper statue "
            "on Liberty Island, reached by ferry from Battery Park.", 4.7),
         _a("high-line", "High Line", "park", "A park on a disused elevated railway on the West "
            "Side, with gardens and views over the Hudson.", 4.7, True)),
    ),
    City(
        "tokyo", "Tokyo", "Japan", "JP", "Tokyo", 1850147, "TYO", 35.6895, 139.69171, 44, 9733276,
        "Asia/Tokyo",
        (Airport("HND", "Haneda Airport", 35.5494, 139.7798),
         Airport("NRT", "Narita International Airport", 35.7720, 140.3929)), ("NH",),
        (10, 10, 14, 19, 23, 26, 29, 31, 27, 22, 17, 12), (1, 2, 5, 10, 15, 19, 23, 24, 21, 15, 9, 4),
        (20, 30, 40, 45, 45, 60, 50, 40, 50, 45, 30, 20),
        "Tokyo is a city of villages: temple lanes and neon crossings, quiet shrines and the "
        "world's busiest railway stations.",
        _hotels("TYO", ("HS", "Shinjuku Skyline Hotel", 4, 0.0019, 0.0008, 198),
                ("PV", "Asakusa Ryokan Rooms", 3, 0.0222, 0.1077, 124),
                ("GZ", "Ginza Imperial", 5, -0.0180, 0.0734, 456),
                ("ML", "Ueno Capsule & Rooms", 2, 0.0237, 0.0814, 48)),
        (_a("senso-ji", "Senso-ji", "temple", "Tokyo's oldest temple, in Asakusa, reached "
            "through the Kaminarimon gate and the Nakamise shopping street.", 4.6, True),
         _a("meiji-jingu", "Meiji Jingu", "shrine", "A Shinto shrine in a forest of 100,000 "
            "trees beside Harajuku.", 4.6, True),
         _a("shibuya-crossing", "Shibuya Crossing", "landmark", "The scramble crossing where up "
            "to three thousand people cross at every green light.", 4.5, True),
         _a("tsukiji-outer-market", "Tsukiji Outer Market", "market", "Stalls of fresh seafood, "
            "knives and tamagoyaki around the old fish market site.", 4.4, True)),
    ),
    City(
        "reykjavik", "Reykjavík", "Iceland", "IS", "Capital Region", 3413829, "REK", 64.13548,
        -21.89541, 20, 118918, "Atlantic/Reykjavik",
        (Airport("KEF", "Keflavík International Airport", 63.9850, -22.6056),), ("FI",),
        (2, 3, 3, 6, 9, 12, 14, 13, 11, 7, 4, 3), (-3, -3, -2, 0, 4, 7, 9, 8, 6, 2, -1, -2),
        (70, 65, 65, 60, 55, 55, 55, 60, 65, 70, 70, 70),
        "Reykjavík is the world's northernmost capital: colourful roofs by the harbour, "
        "geothermal pools, and the northern lights from September to April.",
        _hotels("REK", ("HS", "Harbour Light Hotel", 4, 0.0022, 0.0028, 231),
                ("PV", "Laugavegur Rooms", 3, -0.0012, 0.0101, 167),
                ("AU", "Aurora Grand Reykjavík", 5, 0.0011, -0.0035, 389),
                ("ML", "Old Town Guesthouse", 2, -0.0021, -0.0012, 109)),
        (_a("hallgrimskirkja", "Hallgrímskirkja", "church", "A concrete church modelled on "
            "basalt columns; its tower looks over the whole city.", 4.6),
         _a("harpa", "Harpa Concert Hall", "landmark", "A glass-latticed concert hall on the "
            "harbour, designed with Olafur Eliasson.", 4.6, True),
         _a("sun-voyager", "Sun Voyager", "sculpture", "A steel dream-boat sculpture on the "
            "seafront, facing Mount Esja.", 4.5, True),
         _a("blue-lagoon", "Blue Lagoon", "spa", "A geothermal spa of milky-blue water in a lava "
            "field near Grindavík, 45 minutes from the city.", 4.4)),
    ),
    City(
        "marrakesh", "Marrakesh", "Morocco", "MA", "Marrakesh-Safi", 2542997, "RAK", 31.63416,
        -7.99994, 466, 839296, "Africa/Casablanca",
        (Airport("RAK", "Marrakesh Menara Airport", 31.6069, -8.0363),), ("AT", "FR", "U2"),
        (18, 20, 23, 25, 29, 33, 37, 37, 32, 28, 22, 19), (6, 8, 10, 12, 15, 18, 21, 21, 19, 15, 11, 7),
        (20, 20, 20, 20, 15, 5, 2, 2, 10, 20, 20, 20),
        "Marrakesh's red-walled medina hides riads, souks and gardens around the great square of "
        "Jemaa el-Fnaa, with the Atlas on the horizon.",
        _hotels("RAK", ("HS", "Riad Dar Zellij", 4, 0.0052, 0.0068, 134),
                ("PV", "Medina Courtyard Rooms", 3, 0.0039, 0.0044, 79),
                ("MN", "Palmeraie Palace", 5, 0.0621, 0.0398, 356),
                ("ML", "Kasbah Budget Riad", 2, -0.0088, 0.0071, 41)),
        (_a("jemaa-el-fnaa", "Jemaa el-Fnaa", "square", "The medina's great square: storytellers "
            "and musicians by day, food stalls by night.", 4.4, True),
         _a("jardin-majorelle", "Jardin Majorelle", "garden", "A garden of cacti and bamboo "
            "around a cobalt-blue villa, once Yves Saint Laurent's.", 4.5),
         _a("bahia-palace", "Bahia Palace", "palace", "A nineteenth-century palace of painted "
            "cedar ceilings and zellij courtyards.", 4.4),
         _a("koutoubia", "Koutoubia Mosque", "monument", "The twelfth-century minaret that "
            "became the model for the Giralda in Seville.", 4.5, True)),
    ),
)

# fmt: on

#: Carriers: name and hub airport. Low-cost carriers have no hub and fly short routes only.
CARRIERS: dict[str, tuple[str, str | None]] = {
    "TP": ("TAP AIR PORTUGAL", "LIS"),
    "AF": ("AIR FRANCE", "CDG"),
    "BA": ("BRITISH AIRWAYS", "LHR"),
    "AZ": ("ITA AIRWAYS", "FCO"),
    "VY": ("VUELING AIRLINES", None),
    "LH": ("LUFTHANSA", "FRA"),
    "KL": ("KLM ROYAL DUTCH AIRLINES", "AMS"),
    "DL": ("DELTA AIR LINES", "JFK"),
    "NH": ("ALL NIPPON AIRWAYS", "HND"),
    "FI": ("ICELANDAIR", "KEF"),
    "AT": ("ROYAL AIR MAROC", "CMN"),
    "U2": ("EASYJET", None),
    "FR": ("RYANAIR", None),
}
AIRCRAFT = {"32N": "AIRBUS A320NEO", "73H": "BOEING 737-800", "359": "AIRBUS A350-900",
            "789": "BOEING 787-9"}  # fmt: skip
#: Hubs that are not among the cities (connections only).
_EXTRA_AIRPORTS = {
    "FRA": (Airport("FRA", "Frankfurt Airport", 50.0379, 8.5622), "Europe/Berlin", "FRANKFURT", "DE"),
    "CMN": (Airport("CMN", "Mohammed V International Airport", 33.3675, -7.5898),
            "Africa/Casablanca", "CASABLANCA", "MA"),
}  # fmt: skip
#: Flights longer than this need a hub at one end to fly nonstop.
LONG_HAUL_KM = 4500.0
#: Low-cost carriers fly only this far.
SHORT_HAUL_KM = 3200.0

WMO_CODES = {
    0: "clear sky", 1: "mainly clear", 2: "partly cloudy", 3: "overcast", 45: "fog",
    51: "light drizzle", 61: "slight rain", 63: "moderate rain", 65: "heavy rain",
    71: "slight snow", 73: "moderate snow", 80: "rain showers", 95: "thunderstorm",
}  # fmt: skip


# --------------------------------------------------------------------------- looking up


def fold(text: str) -> str:
    """Lower case without accents: "Reykjavík" and "reykjavik" are the same city."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower().strip()


def city_named(name: str) -> City | None:
    """The city of this name, slug or city code (accents and case ignored)."""
    key = fold(name)
    for city in CITIES:
        if key in (fold(city.name), city.slug, city.city_code.lower()):
            return city
    return None


def city_of_code(code: str) -> City | None:
    """The city of an IATA city or airport code."""
    code = code.upper()
    for city in CITIES:
        if code == city.city_code or any(a.code == code for a in city.airports):
            return city
    return None


def nearest_city(latitude: float, longitude: float) -> City:
    return min(CITIES, key=lambda c: distance_km(latitude, longitude, c.latitude, c.longitude))


def airport(code: str) -> tuple[Airport, str]:
    """An airport by code, and its time zone."""
    for city in CITIES:
        for each in city.airports:
            if each.code == code:
                return each, city.timezone
    extra = _EXTRA_AIRPORTS[code]
    return extra[0], extra[1]


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 6371.0 * 2 * math.asin(math.sqrt(a))


def draw(*parts: object) -> int:
    """A stable pseudo-random number (0 to 2**32 - 1) from its inputs."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big")


# --------------------------------------------------------------------------- flights


@dataclass(frozen=True)
class Segment:
    carrier: str
    number: str
    origin: str
    destination: str
    departs: datetime  # local time at the origin, naive
    arrives: datetime  # local time at the destination, naive
    minutes: int
    aircraft: str


@dataclass(frozen=True)
class Itinerary:
    segments: tuple[Segment, ...]

    @property
    def minutes(self) -> int:
        first, last = self.segments[0], self.segments[-1]
        start = first.departs.replace(tzinfo=ZoneInfo(airport(first.origin)[1]))
        end = last.arrives.replace(tzinfo=ZoneInfo(airport(last.destination)[1]))
        return int((end - start).total_seconds() // 60)


@dataclass(frozen=True)
class FlightOfferData:
    id: str
    carrier: str
    outbound: Itinerary
    inbound: Itinerary | None
    total: float
    base: float
    seats: int
    last_ticketing: date


def flight_offers(
    origin: City, destination: City, day: date, return_day: date | None, adults: int
) -> list[FlightOfferData]:
    """The offers for a route and dates, cheapest first."""
    carriers = route_carriers(origin, destination)
    count = 3 + draw("count", origin.slug, destination.slug, day) % 4
    offers = []
    for i in range(count):
        carrier = carriers[i % len(carriers)]
        outbound = _itinerary(carrier, origin, destination, day, i)
        inbound = _itinerary(carrier, destination, origin, return_day, i) if return_day else None
        fare = _fare(outbound, i, day) + (
            _fare(inbound, i, return_day) if inbound and return_day else 0
        )
        total = round(fare * adults, 2)
        offers.append(FlightOfferData(
            id="", carrier=carrier, outbound=outbound, inbound=inbound, total=total,
            base=round(total * 0.78, 2), seats=1 + draw("seats", carrier, day, i) % 9,
            last_ticketing=max(day - timedelta(days=3), today()),
        ))  # fmt: skip
    offers.sort(key=lambda o: (o.total, o.outbound.segments[0].departs))
    return [replace(o, id=str(n)) for n, o in enumerate(offers, 1)]


def route_carriers(origin: City, destination: City) -> list[str]:
    km = distance_km(origin.latitude, origin.longitude, destination.latitude, destination.longitude)
    found: list[str] = []
    for code in (*origin.carriers, *destination.carriers):
        short_only = CARRIERS[code][1] is None
        if code not in found and not (short_only and km > SHORT_HAUL_KM):
            found.append(code)
    return found or ["KL"]


def _itinerary(carrier: str, origin: City, destination: City, day: date, i: int) -> Itinerary:
    hub = CARRIERS[carrier][1]
    start = _airport_for(origin, carrier, hub, draw("from", carrier, i))
    end = _airport_for(destination, carrier, hub, draw("to", carrier, i))
    km = distance_km(start.latitude, start.longitude, end.latitude, end.longitude)
    minute = 6 * 60 + (draw("dep", carrier, origin.slug, destination.slug, day, i) % 192) * 5
    departs = datetime.combine(day, time()) + timedelta(minutes=minute)
    if km <= LONG_HAUL_KM or hub in (start.code, end.code) or hub is None:
        return Itinerary((_segment(carrier, start.code, end.code, departs, i),))
    first = _segment(carrier, start.code, hub, departs, i)
    layover = 70 + draw("layover", carrier, day, i) % 12 * 10
    second = _segment(carrier, hub, end.code, first.arrives + timedelta(minutes=layover), i + 50)
    return Itinerary((first, second))


def _airport_for(city: City, carrier: str, hub: str | None, seed: int) -> Airport:
    """The airport a carrier uses in a city: its hub if the hub is there."""
    for each in city.airports:
        if each.code == hub:
            return each
    return city.airports[seed % len(city.airports)]


def _segment(carrier: str, origin: str, destination: str, departs: datetime, i: int) -> Segment:
    (a, a_tz), (b, b_tz) = airport(origin), airport(destination)
    km = distance_km(a.latitude, a.longitude, b.latitude, b.longitude)
    minutes = int(km / 780 * 60 + 35) // 5 * 5
    start = departs.replace(tzinfo=ZoneInfo(a_tz))
    arrives = (start + timedelta(minutes=minutes)).astimezone(ZoneInfo(b_tz)).replace(tzinfo=None)
    number = str(100 + draw("number", carrier, origin, destination, i) % 1800)
    aircraft = ("359", "789")[i % 2] if km > LONG_HAUL_KM else ("32N", "73H")[i % 2]
    return Segment(carrier, number, origin, destination, departs, arrives, minutes, aircraft)


def _fare(itinerary: Itinerary, i: int, day: date) -> float:
    km = sum(distance_km(*_coords(s.origin), *_coords(s.destination)) for s in itinerary.segments)
    factor = 0.8 + (draw("fare", itinerary.segments[0].carrier, day, i) % 80) / 100
    low_cost = CARRIERS[itinerary.segments[0].carrier][1] is None
    season = 1.25 if day.month in (6, 7, 8, 12) else 1.0
    return (25 + km * (0.055 if low_cost else 0.085)) * factor * season


def _coords(code: str) -> tuple[float, float]:
    found = airport(code)[0]
    return found.latitude, found.longitude


def iso_minutes(minutes: int) -> str:
    """An ISO 8601 duration, the way Amadeus writes them: PT2H35M."""
    hours, rest = divmod(minutes, 60)
    return f"PT{hours}H{rest}M" if rest else f"PT{hours}H"


# --------------------------------------------------------------------------- hotels


@dataclass(frozen=True)
class HotelOfferData:
    id: str
    hotel: Hotel
    city: City
    available: bool
    room_type: str
    room_category: str
    bed_type: str
    total: float
    nights: int
    refundable_until: date | None


_ROOMS = (("A1K", "SUPERIOR_ROOM", "KING"), ("B2T", "STANDARD_ROOM", "TWIN"),
          ("C1D", "DELUXE_ROOM", "DOUBLE"))  # fmt: skip


def hotel_offer(
    hotel: Hotel, city: City, check_in: date, check_out: date, adults: int
) -> HotelOfferData:
    nights = (check_out - check_in).days
    seed = draw("hotel", hotel.hotel_id, check_in, check_out)
    room = _ROOMS[seed % len(_ROOMS)]
    season = 1.3 if check_in.month in (6, 7, 8) else 0.9 if check_in.month in (1, 2, 11) else 1.0
    per_night = (
        hotel.base_rate * season * (0.9 + (seed >> 8) % 30 / 100) * (1 + 0.15 * (adults - 1))
    )
    refundable = check_in - timedelta(days=2) if hotel.stars >= 3 else None
    offer_id = (
        hashlib.sha256(f"{hotel.hotel_id}{check_in}{check_out}{adults}".encode())
        .hexdigest()[:10]
        .upper()
    )
    return HotelOfferData(
        id=offer_id, hotel=hotel, city=city, available=(seed >> 16) % 7 != 0,
        room_type=room[0], room_category=room[1], bed_type=room[2],
        total=round(per_night * nights, 2), nights=nights, refundable_until=refundable,
    )  # fmt: skip


# --------------------------------------------------------------------------- weather


@dataclass(frozen=True)
class DayWeather:
    day: date
    code: int
    high: float
    low: float
    rain_chance: int
    rain_mm: float
    wind_kmh: float


def weather(city: City, day: date) -> DayWeather:
    """A day's weather: the city's climate for the month, varied by a stable draw."""
    m = day.month - 1
    seed = draw("weather", city.slug, day)
    high = city.highs[m] + (seed % 70) / 10 - 3.5
    low = min(city.lows[m] + ((seed >> 8) % 50) / 10 - 2.5, high - 3)
    chance = max(0, min(100, city.rain[m] + (seed >> 16) % 41 - 20))
    if chance >= 70:
        code = 71 if high < 2 else 95 if high > 28 else 63
    elif chance >= 50:
        code = 73 if high < 1 else (61, 80, 51)[(seed >> 24) % 3]
    elif chance >= 30:
        code = 3 if (seed >> 24) % 5 else 45
    else:
        code = (0, 1, 2)[(seed >> 24) % 3]
    rain_mm = round(chance / 100 * ((seed >> 4) % 90) / 10, 1) if code >= 51 else 0.0
    wind = round(6 + (seed >> 12) % 250 / 10, 1)
    return DayWeather(day, code, round(high, 1), round(low, 1), chance, rain_mm, wind)


def utc_offset_seconds(city: City, day: date) -> int:
    moment = datetime.combine(day, time(12), tzinfo=ZoneInfo(city.timezone))
    offset = moment.utcoffset()
    return int(offset.total_seconds()) if offset else 0


def tz_abbreviation(city: City, day: date) -> str:
    return datetime.combine(day, time(12), tzinfo=ZoneInfo(city.timezone)).tzname() or "GMT"


def today() -> date:
    """The providers' today (UTC): what forecasts and "dates in the past" are measured from."""
    return datetime.now(UTC).date()


__all__ = [
    "AIRCRAFT",
    "CARRIERS",
    "CITIES",
    "WMO_CODES",
    "Airport",
    "Attraction",
    "City",
    "DayWeather",
    "FlightOfferData",
    "Hotel",
    "HotelOfferData",
    "Itinerary",
    "Segment",
    "airport",
    "city_named",
    "city_of_code",
    "distance_km",
    "draw",
    "flight_offers",
    "fold",
    "hotel_offer",
    "iso_minutes",
    "nearest_city",
    "route_carriers",
    "today",
    "tz_abbreviation",
    "utc_offset_seconds",
    "weather",
]
