"""What the text of a call needs to know about its language: the language's name (the model is told
to answer in it), the words that carry no topic in a spoken question, the synonyms a caller uses
for the same thing, the Snowball stemmer, and the few phrases voiceassist itself says.

English, German and Spanish are written out here; any other language tag gets its Snowball
stemmer when there is one and its name, and English phrases until the admin sets them per
language (``[llm.<tag>] unknown_answer``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class LanguageRules:
    code: str                     # the primary subtag: en, de, es
    name: str                     # in English, as a model is told: "German"
    stemmer: str                  # Snowball's algorithm name; "" for none
    stopwords: frozenset[str]
    # Concepts a caller names in many ways; the first word names the concept.
    synonyms: tuple[tuple[str, ...], ...]
    unknown_answer: str           # the default of [llm] unknown_answer in this language
    link: str                     # what a URL in a reply is read as
    # German joins words: a "Gasheizkessel" is a kind of "Kessel", its last part. A word no
    # synonym names is read as the longest synonym it ends with.
    compounds: bool = False


ENGLISH = LanguageRules(
    code="en", name="English", stemmer="english",
    stopwords=frozenset("""
a about after again all also am an and any anybody anyone anything are as at be been being but by can could
did do does doing don done for from get got had has have having he her here hi him his how i if i'm in into
is it it's its just know let like ll me might mine more most much must my need no not now of off ok okay on
one only or other our ours out over please really right say she should so some somebody someone something
still tell today during until than thank thanks that that's the their them then there these they thing this those to too
up us very want wanted was way we well were what what's when where which while who why will with would yes
yet you you're your yours hello hey sir madam maybe wondering wonder question ask asking
""".split()),
    synonyms=(
        ("cost", "price", "prices", "pricing", "charge", "charges", "fee", "fees", "rate", "rates", "expensive",
         "cheap", "costs", "pay", "quote", "tariff"),
        ("open", "opening", "hours", "close", "closed", "closing", "business", "time", "times"),
        ("where", "address", "located", "location", "find", "street", "directions", "situated", "based"),
        ("office", "shop", "store", "premises", "branch", "workshop"),
        ("boiler", "boilers", "heating", "heater", "furnace"),
        ("fix", "repair", "repairs", "mend", "service", "servicing", "broken", "working", "help", "look"),
        ("visit", "callout", "call-out", "house", "home", "visiting"),
        ("weekday", "week", "weekdays", "weekly", "monday", "tuesday", "wednesday", "thursday", "friday"),
        ("weekend", "weekends", "sunday", "sundays"),
        ("near", "next", "nearby", "beside", "opposite"),
        ("station", "railway", "train"),
    ),
    unknown_answer="I'm sorry, I don't know that. I can take a message, or put you through to someone who can help.",
    link="the link on our website",
)

GERMAN = LanguageRules(
    code="de", name="German", stemmer="german",
    stopwords=frozenset("""
aber alle allem allen aller alles als also am an auch auf aus bei beim bin bis bitte bist da damit dann
das dass dein deine dem den denn der des dessen die dies diese diesem diesen dieser dieses doch dort du
durch ein eine einem einen einer eines er es etwas euch euer eure für gibt gern gerne guten hab habe haben
hallo hat hatte hätte ich ihr ihre im in ist ja jemand jemanden kann kannst kein keine können könnte
man mal mein meine mich mir mit möchte muss müssen nach nicht noch nun nur ob oder sagen schon sehr sein
seine sich sie sind so soll sollte tag über um und uns unser unsere unter vielleicht vom von vor war wäre
was weiß wann warum welche welchen welcher wenn wer wie wieder wir wird woher wohin würde würden
zu zum zur frage fragen danke zwischen bis seit während ab gegen ohne heute mehr
""".split()),
    synonyms=(
        ("kosten", "kostet", "preis", "preise", "gebühr", "gebühren", "teuer", "günstig", "bezahlen", "tarif",
         "angebot", "verlangen", "berechnen"),
        ("geöffnet", "öffnungszeiten", "offen", "geschlossen", "schließen", "uhrzeit", "zeiten", "erreichbar"),
        ("wo", "adresse", "finde", "finden", "straße", "standort", "weg", "liegt", "befindet"),
        ("büro", "laden", "geschäft", "filiale", "werkstatt"),
        ("heizung", "heizkessel", "kessel", "therme", "boiler"),
        ("reparieren", "reparatur", "repariert", "kaputt", "defekt", "wartung", "hilfe", "helfen", "funktioniert",
         "funktionieren"),
        ("besuch", "hausbesuch", "anfahrt", "haus", "hause", "zuhause"),
        ("wochentag", "wochentags", "woche", "werktags", "montag", "dienstag", "mittwoch", "donnerstag",
         "freitag"),
        ("wochenende", "sonntag", "sonntags"),
        ("bahnhof", "zug", "bahn"),
    ),
    compounds=True,
    unknown_answer=("Das weiß ich leider nicht. Ich kann eine Nachricht aufnehmen oder Sie mit jemandem "
                    "verbinden, der Ihnen helfen kann."),
    link="der Link auf unserer Webseite",
)

SPANISH = LanguageRules(
    code="es", name="Spanish", stemmer="spanish",
    stopwords=frozenset("""
a al algo alguien algún alguna alguno como con cual cuál cuales cuando cuándo cuanto cuánto cuánta cuántos
cuántas de del el
él ella en es esa ese eso esta está están este esto estoy favor gracias hay hola la las le les lo los me
mi mis muy más necesito no nos nuestro nuestra o para pero por porque pregunta puedo puede pueden que qué
quiero quisiera saber se ser si sí sin sobre son su sus también tengo tiene tienen tu tú un una uno unos
usted ustedes y ya yo buenos buenas días hoy entre hasta desde durante hacia contra según tras
""".split()),
    synonyms=(
        ("cuesta", "costo", "coste", "precio", "precios", "tarifa", "tarifas", "caro", "barato", "pagar",
         "presupuesto", "cobran"),
        ("abierto", "abiertos", "abren", "horario", "horarios", "hora", "horas", "cierran", "cerrado",
         "abre"),
        ("dónde", "donde", "dirección", "ubicación", "encuentran", "encontrar", "calle", "están", "ubicados", "llegar"),
        ("oficina", "tienda", "local", "taller", "sucursal"),
        ("caldera", "calderas", "calefacción", "calentador"),
        ("reparar", "reparan", "arreglar", "arreglan", "reparación", "roto", "averiado", "avería", "ayuda",
         "mantenimiento", "funciona", "funcionar"),
        ("visita", "desplazamiento", "domicilio", "casa", "venir"),
        ("semana", "laborables", "lunes", "martes", "miércoles", "jueves", "viernes"),
        ("finde", "sábado", "domingo", "domingos"),
        ("estación", "tren"),
    ),
    unknown_answer=("Lo siento, eso no lo sé. Puedo tomar un mensaje o pasarle con alguien que pueda "
                    "ayudarle."),
    link="el enlace de nuestra página web",
)

KNOWN = {rules.code: rules for rules in (ENGLISH, GERMAN, SPANISH)}

# Names of other languages a call may be in, for the model ("answer in Italian").
NAMES = {
    "ar": "Arabic", "ca": "Catalan", "cs": "Czech", "da": "Danish", "el": "Greek", "fi": "Finnish",
    "fr": "French", "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian", "it": "Italian",
    "ja": "Japanese", "ko": "Korean", "nl": "Dutch", "no": "Norwegian", "nb": "Norwegian", "pl": "Polish",
    "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sv": "Swedish", "tr": "Turkish",
    "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese", "cmn": "Chinese", "yue": "Cantonese",
}
# Snowball's algorithms by primary subtag (snowballstemmer.algorithms()).
STEMMERS = {
    "ar": "arabic", "ca": "catalan", "da": "danish", "el": "greek", "fi": "finnish", "fr": "french",
    "hi": "hindi", "hu": "hungarian", "id": "indonesian", "it": "italian", "nl": "dutch", "no": "norwegian",
    "nb": "norwegian", "pt": "portuguese", "ro": "romanian", "ru": "russian", "sv": "swedish", "tr": "turkish",
}


def primary(tag: str) -> str:
    """The language of a tag without its region or script: "de-DE" → "de", "es_419" → "es"."""
    return tag.replace("_", "-").split("-")[0].lower()


@lru_cache(maxsize=64)
def rules_for(tag: str) -> LanguageRules:
    """The rules of the language ``tag`` (en-US, de-DE, es, fr-CA ...)."""
    code = primary(tag)
    if code in KNOWN:
        return KNOWN[code]
    return LanguageRules(code=code, name=NAMES.get(code, tag), stemmer=STEMMERS.get(code, ""),
                         stopwords=frozenset(), synonyms=(), unknown_answer=ENGLISH.unknown_answer,
                         link=ENGLISH.link)


def is_english(tag: str) -> bool:
    return primary(tag) == "en"


def unknown_answer(configured: str, language: str) -> str:
    """``[llm] unknown_answer`` for a call in ``language``: the admin's own text, or, while it is
    the English default, the language's own words for it."""
    if configured == ENGLISH.unknown_answer:
        return rules_for(language).unknown_answer
    return configured


def answer_in(language: str) -> str:
    """What a chat model is told about the call's language ("" for English: the prompts are)."""
    if is_english(language):
        return ""
    name = rules_for(language).name
    return f"The caller speaks {name}. Always answer in {name}, whatever language the facts are in."
