"""Text as words, in one place: the tokenizer, the stemmer, the stopword list and the sentence splitter that
retrieval (bot/knowledge.py), answer selection (bot/grounding.py, bot/selection.py), the conversation's context
(bot/context.py) and the checks all read text with, so that "returns" in a question and "return" in an article
are the same word to every part of the bot."""

import re
import threading
from functools import lru_cache

import snowballstemmer

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that deny: kept apart from the stopwords, since "not arrived" and "no receipt" mean something.
NEGATIONS = _word_set(
    "not no never cannot can't don't doesn't didn't won't isn't aren't wasn't weren't shouldn't couldn't "
    "wouldn't hasn't haven't without none nothing neither nor unable"
)
# Words that say nothing about what a text is about (function words, fillers, greetings).
STOPWORDS = _word_set(
    """a an the and or but if so of to in on at by for from with as into onto about over under than then
    that this these those there here it its it's itself is are was were be been being am do does did done doing
    have has had having will would shall should can could may might must i me my mine myself we us our ours you
    your yours yourself he she him his her hers they them their theirs what which who whom whose when where why
    how all any some each every more most much many such only also just very too again once both either yet still
    up down out off via per please i'm we're you're they're we'll you'll i'll we've you've i've let let's
    get gets got make makes made go goes going use used using need needs needed one ones other own same few
    further because while through during between yes yeah ok okay sure certainly course absolutely percent
    what's that's there's here's who's where's how's when's why's hi hello hey thanks thank"""
)
# Words that point back to something named earlier in the conversation ("can it go there?", "how much are those?").
REFERS_BACK = _word_set("it its it's itself that this these those them they they're their there")
# Number words read as their figures, so that "five days" and "5 days" are the same words.
NUMBER_WORDS = {
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
    "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "fourteen": "14", "fifteen": "15",
    "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "ninety": "90",
    "hundred": "100",
}  # fmt: skip


def normalise(text: str) -> str:
    """Lower case, one apostrophe, "e-mail" as "email"."""
    return text.lower().replace("’", "'").replace("e-mail", "email")


# Function words as customers type them in a chat, read as written out ("u" is "you", "dont" is "don't"), so that
# they are stopwords and negations like the written-out forms.
CHAT_SPELLINGS = {
    "u": "you", "ur": "your", "r": "are", "im": "i'm", "ive": "i've", "dont": "don't", "doesnt": "doesn't",
    "didnt": "didn't", "cant": "can't", "isnt": "isn't", "arent": "aren't", "wasnt": "wasn't", "havent": "haven't",
    "hasnt": "hasn't", "couldnt": "couldn't", "shouldnt": "shouldn't", "wouldnt": "wouldn't", "whats": "what's",
    "thats": "that's", "theres": "there's", "hows": "how's", "wheres": "where's", "pls": "please", "plz": "please",
    "thx": "thanks",
}  # fmt: skip


def words(text: str) -> list[str]:
    """The words of `text`, lower-cased, numbers and contractions ("can't") whole, chat spellings written out."""
    return [CHAT_SPELLINGS.get(word, word) for word in _WORD.findall(normalise(text))]


_STEMMER = snowballstemmer.stemmer("english")
_STEMMER_LOCK = threading.Lock()  # a Snowball stemmer keeps its state between calls


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The English Snowball stem of a word ("returns", "returned" -> "return"); a number word is its figure and
    a possessive loses its "'s"."""
    word = normalise(word)
    if word.endswith("'s"):
        word = word[:-2]
    if word in NUMBER_WORDS:
        return NUMBER_WORDS[word]
    with _STEMMER_LOCK:
        return _STEMMER.stemWord(word)


def content_words(text: str) -> list[str]:
    """The words of `text` that carry meaning: no stopwords (negations are kept)."""
    return [word for word in words(text) if word not in STOPWORDS]


# A sentence ends at . ! or ? (and a closing quote or bracket) followed by space and a capital or digit.
_SENTENCE_END = re.compile(r"""[.!?]["')\]]*\s+(?=["'(\[]?[A-Z0-9])""")
_ABBREVIATIONS = {"e.g", "i.e", "etc", "vs", "approx", "no", "mr", "mrs", "ms", "dr", "st", "incl", "ca"}


def split_sentences(text: str) -> list[str]:
    """Whole sentences of a paragraph; "P.O. boxes", "e.g. Visa" and "U.S. orders" stay whole."""
    text = " ".join(text.split())
    sentences, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        pieces = text[start : match.start() + 1].split()
        last = pieces[-1].rstrip(".").lower() if pieces else ""
        if last in _ABBREVIATIONS or re.fullmatch(r"(?:[a-z]\.)*[a-z]", last):
            continue  # an abbreviation or initials, not the end of a sentence
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    if text[start:].strip():
        sentences.append(text[start:].strip())
    return sentences
