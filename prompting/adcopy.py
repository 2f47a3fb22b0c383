"""Ad copy: a headline (<= 40 characters) and a call to action (<= 18) per prompt.

Two sources share one shape, {"headline": str, "cta": str}:
- `offline_copy`: deterministic rules on the brief (its first clause becomes the headline,
  keywords pick the call to action from a small per-language table), so every prompt has
  copy even without an LLM and reruns give the same words.
- the LLM expander (adgen.prompting.llm) asks for copy in the same structured reply; `check_copy`
  validates it like the prompts (length, no links/markup/instructions/keys, same writing
  system as the brief) and a bad reply falls back to the rules.

Language is judged by writing system (Han, kana, Hangul, Arabic, ...) plus a stop-word
guess among a few Latin-script languages; that is enough to keep a Chinese brief's copy in
Chinese, not to tell Spanish from Catalan.
"""
from __future__ import annotations

import hashlib
import os
import re
import unicodedata

HEADLINE_MAX = 40
CTA_MAX = 18

# Links, markup, template braces, prompt-injection words and things that look like keys are
# never shown on an ad.
_BAD_RE = re.compile(
    r"https?:|www\.|\.(com|net|org|io|cn)\b|[<>{}\[\]`\\|]|&[a-z#0-9]+;|"
    r"\b(ignore|instructions?|system prompt|assistant|jailbreak|disregard|api[ _-]?key|"
    r"password|token)\b|\bsk-[A-Za-z0-9_-]{6,}|\b(headline|cta|prompt)\s*[:=]", re.I)

_SCRIPTS = (("CJK", "han"), ("HIRAGANA", "kana"), ("KATAKANA", "kana"), ("HANGUL", "hangul"),
            ("ARABIC", "arabic"), ("HEBREW", "hebrew"), ("CYRILLIC", "cyrillic"),
            ("GREEK", "greek"), ("THAI", "thai"), ("DEVANAGARI", "devanagari"),
            ("LATIN", "latin"))
# Common words that tell Latin-script languages apart (a guess; English is the default).
_STOPWORDS = {
    "es": {"el", "los", "las", "y", "para", "con", "del", "una", "en", "oferta", "nuevo"},
    "fr": {"le", "les", "des", "et", "pour", "avec", "du", "une", "nouveau", "soldes"},
    "de": {"der", "die", "das", "und", "mit", "für", "ein", "eine", "neu", "jetzt"},
    "pt": {"os", "as", "e", "para", "com", "do", "da", "um", "uma", "novo", "promoção"},
    "it": {"il", "gli", "e", "per", "con", "della", "uno", "una", "nuovo", "saldi"},
}
_BY_SCRIPT = {"han": "zh", "hangul": "ko", "arabic": "ar", "hebrew": "he", "cyrillic": "ru",
              "greek": "el", "thai": "th", "devanagari": "hi"}

# Intent keywords (lower-case substrings) -> call to action; first match wins.
_INTENTS = (
    ("preorder", ("pre-order", "preorder", "pre order", "预订", "预购", "予約", "예약")),
    ("order", ("deliver", "pizza", "order", "takeaway", "menu", "外卖", "订餐", "配達", "배달")),
    ("join", ("loyalty", "member", "sign up", "signup", "club", "subscribe", "会员", "会員",
              "회원")),
    ("visit", ("opening", "grand open", "store", "shop opening", "event", "party", "tour",
               "开业", "开幕", "オープン", "오픈")),
    ("shop", ("sale", "deal", "discount", "% off", "offer", "black friday", "shop", "buy",
              "oferta", "rebaja", "descuento", "soldes", "promo", "angebot", "rabatt",
              "promoção", "saldi", "促销", "优惠", "特价", "折", "セール", "割引", "세일",
              "할인", "скидк", "распродаж", "تخفيض", "מבצע")),
)
_CTAS = {
    "en": {"shop": ("Shop now", "Shop the sale"), "order": ("Order now", "Get it delivered"),
           "preorder": ("Pre-order now", "Reserve yours"), "visit": ("Visit us", "Join us"),
           "join": ("Join today", "Sign up now"), "learn": ("Learn more", "Discover more")},
    "zh": {"shop": ("立即购买", "马上抢购"), "order": ("立即下单", "马上订购"),
           "preorder": ("立即预订",), "visit": ("欢迎光临", "立即前往"), "join": ("立即加入",),
           "learn": ("了解更多", "立即查看")},
    "ja": {"shop": ("今すぐ購入", "セールを見る"), "order": ("今すぐ注文",),
           "preorder": ("今すぐ予約",), "visit": ("ご来店ください",), "join": ("今すぐ登録",),
           "learn": ("詳しく見る",)},
    "ko": {"shop": ("지금 구매", "세일 보기"), "order": ("지금 주문",), "preorder": ("지금 예약",),
           "visit": ("방문하기",), "join": ("지금 가입",), "learn": ("자세히 보기",)},
    "es": {"shop": ("Compra ahora",), "order": ("Pide ahora",), "preorder": ("Resérvalo ya",),
           "visit": ("Visítanos",), "join": ("Únete hoy",), "learn": ("Más información",)},
    "fr": {"shop": ("Acheter",), "order": ("Commander",), "preorder": ("Précommander",),
           "visit": ("Venez nous voir",), "join": ("Inscrivez-vous",),
           "learn": ("En savoir plus",)},
    "de": {"shop": ("Jetzt kaufen",), "order": ("Jetzt bestellen",),
           "preorder": ("Jetzt vorbestellen",), "visit": ("Besuchen Sie uns",),
           "join": ("Jetzt beitreten",), "learn": ("Mehr erfahren",)},
    "pt": {"shop": ("Compre agora",), "order": ("Peça agora",), "preorder": ("Reserve já",),
           "visit": ("Visite-nos",), "join": ("Junte-se a nós",), "learn": ("Saiba mais",)},
    "it": {"shop": ("Acquista ora",), "order": ("Ordina ora",), "preorder": ("Prenota ora",),
           "visit": ("Vieni a trovarci",), "join": ("Iscriviti ora",),
           "learn": ("Scopri di più",)},
    "ru": {"shop": ("Купить сейчас",), "order": ("Заказать",), "learn": ("Подробнее",)},
    "ar": {"shop": ("تسوق الآن",), "order": ("اطلب الآن",), "learn": ("اعرف المزيد",)},
    "he": {"shop": ("קנו עכשיו",), "order": ("הזמינו עכשיו",), "learn": ("למידע נוסף",)},
    "el": {"shop": ("Αγοράστε τώρα",), "learn": ("Μάθετε περισσότερα",)},
}
# Headline when the brief has no usable words (only symbols): still in its language.
_GENERIC = {"en": "Something new for you", "zh": "新品上市", "ja": "新登場", "ko": "신제품 출시",
            "es": "Novedades para ti", "fr": "Nouveautés", "de": "Neu für Sie",
            "pt": "Novidades para você", "it": "Novità per te", "ru": "Новинки",
            "ar": "جديدنا لك", "he": "חדש בשבילך", "el": "Νέα για εσάς"}
# Words that describe the picture, not the offer: never part of a headline.
_STYLE_RE = re.compile(
    r"\s*\b(?:(?:on|with|in)\s+(?:an?\s+)?)?(?:[a-z]+\s+)?(?:background|theme|colou?rs?)\b"
    r"|\s*\b(?:bright and fun|flat sticker style|sticker style|pastel \w+)\b", re.I)
_FILLER_END = {"promo", "promotion", "campaign", "ad", "ads", "advert", "banner", "and", "or",
               "on", "with", "the", "a", "an", "for", "of", "in", "to", "at", "by", "&"}
_CLAUSE_RE = re.compile(r"\s+[-–—|]\s+|[:;,.!?()\[\]]\s*|[，。：；！？、（）「」]")


def clean(text: str) -> str:
    """Control/format characters out, whitespace collapsed (what is shown on the ad)."""
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")
                   else ch for ch in str(text))
    return re.sub(r"\s+", " ", text).strip().strip("\"'“”‘’«»")


def scripts(text: str) -> set[str]:
    """Writing systems of the letters in `text` ('han', 'kana', 'latin', ...)."""
    out = set()
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            out.add(next((s for prefix, s in _SCRIPTS if name.startswith(prefix)), "other"))
    return out


def language(text: str) -> str:
    """A language code guessed from the writing system (+ stop words for Latin text)."""
    found = scripts(text)
    if "kana" in found:
        return "ja"
    if "hangul" in found:
        return "ko"
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return "und"
    counts = {}
    for ch in letters:
        s = next(iter(scripts(ch)))
        counts[s] = counts.get(s, 0) + 1
    main = max(sorted(counts), key=counts.get)
    if main != "latin":
        return _BY_SCRIPT.get(main, "und")
    words = re.findall(r"[^\W\d_]+", text.lower())
    best, hits = "en", 0
    for lang, stop in _STOPWORDS.items():
        n = sum(w in stop for w in words)
        if n > hits and n >= max(1, len(words) // 4):
            best, hits = lang, n
    return best


def _family(text: str) -> set[str]:
    found = scripts(text)
    return {"cjk"} if found & {"han", "kana"} else found


def copy_problem(text, limit: int, brief: str) -> str | None:
    """Why `text` cannot be shown as copy for `brief` (None when it can)."""
    if not isinstance(text, str):
        return "not-text"
    text = clean(text)
    if not text or not any(ch.isalpha() for ch in text):
        return "empty"
    if len(text) > limit:
        return "too-long"
    key = os.environ.get("OPENAI_API_KEY", "")
    if _BAD_RE.search(text) or (len(key) >= 4 and key in text):
        return "unsafe"
    # Same writing system as the brief; Latin brand names may appear in any copy.
    brief_family, text_family = _family(brief), _family(text)
    if brief_family and (not text_family <= brief_family | {"latin"}
                         or not text_family & brief_family):
        return "language"
    return None


def check_copy(raw, brief: str) -> tuple[dict | None, str | None]:
    """An LLM's {"headline", "cta"} -> (clean copy, None) or (None, reason code)."""
    if not isinstance(raw, dict):
        return None, "no-copy"
    headline, cta = raw.get("headline"), raw.get("cta", raw.get("call_to_action"))
    for name, value, limit in (("headline", headline, HEADLINE_MAX), ("cta", cta, CTA_MAX)):
        problem = copy_problem(value, limit, brief)
        if problem:
            return None, f"{name}-{problem}"
    return {"headline": clean(headline), "cta": clean(cta)}, None


def _cut(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary when the text has spaces."""
    if len(text) <= limit:
        return text
    head = text[:limit + 1]
    if " " in head.rstrip():
        return head[:head.rstrip().rfind(" ")].rstrip()
    if re.search(r"[^\W\d_]{%d}" % limit, head) and scripts(head) <= {"latin", "cyrillic",
                                                                     "greek"}:
        return head[:limit - 1] + "…"  # one unbreakable word: show that it goes on
    return head[:limit].rstrip()


def _trim_filler(text: str) -> str:
    words = text.split(" ")
    while len(words) > 1 and words[-1].lower().strip(".,") in _FILLER_END:
        words.pop()
    return " ".join(words)


def headline_for(brief: str, lang: str | None = None) -> str:
    """The brief's first clause, style words and trailing filler removed, <= 40 chars."""
    # Markup and links are not copy: drop them before looking for the first clause.
    text = clean(re.sub(r"<[^>]*>|https?://\S+|www\.\S+|&[a-z#0-9]+;", " ", clean(brief)))
    text = re.sub(r"[<>{}\[\]`\\|]", " ", text)
    lang = lang or language(text)
    for clause in _CLAUSE_RE.split(text):
        clause = clause.strip()
        if lang not in ("zh", "ja", "ko"):
            clause = re.sub(r"\s+", " ", _STYLE_RE.sub(" ", clause)).strip()
        clause = _trim_filler(_cut(clause, HEADLINE_MAX))
        if sum(ch.isalpha() for ch in clause) >= 2:
            clause = clause[0].upper() + clause[1:]
            if copy_problem(clause, HEADLINE_MAX, text) is None:
                return clause
    return _GENERIC.get(lang, _GENERIC["en"])


def intent_of(brief: str) -> str:
    low = clean(brief).lower()
    for intent, words in _INTENTS:
        if any(w in low for w in words):
            return intent
    return "learn"


def offline_copy(brief: str, variation: int = 0) -> dict:
    """Deterministic copy for variation `variation` of a brief: {"headline", "cta", "lang"}."""
    lang = language(re.sub(r"<[^>]*>|https?://\S+", " ", clean(brief)))
    table = _CTAS.get(lang, _CTAS["en"])
    intent = intent_of(brief)
    options = table.get(intent) or table.get("learn") or _CTAS["en"][intent]
    if intent == "learn" and len(options) > 1:  # no keyword: vary by brief, not only by k
        variation += int(hashlib.sha256(brief.encode()).hexdigest(), 16) % len(options)
    return {"headline": headline_for(brief, lang), "cta": options[variation % len(options)],
            "lang": lang}
