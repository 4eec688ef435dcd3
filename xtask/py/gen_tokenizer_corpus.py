"""Generate the tokenizer test corpus: crates/tokenizer/tests/data/tokenizer/corpus.jsonl.

Each line is a JSON object {"text": str, "special": bool}. `special` lines are meant to be
encoded with special-token parsing (`<|eot_id|>` → 128009); the others as ordinary text.
The corpus mixes hand-written material (prose in many scripts, code, edge cases) with
systematic and random variations drawn from a fixed seed, so the output is identical on every
run and every Python 3 version (only `random.Random(seed)` with `random`, `randrange`,
`choice` and `shuffle` is used). Stdlib only.

    python3 xtask/py/gen_tokenizer_corpus.py crates/tokenizer/tests/data/tokenizer/corpus.jsonl

Then regenerate the expected ids with xtask/py/tokenizer_reference.py.
"""
import json
import random
import sys

SEED = 20250417

# --- hand-written material ------------------------------------------------------------------

PROSE = {
    "english": [
        "The quick brown fox jumps over the lazy dog.",
        "It's a truth universally acknowledged that tokenizers are harder than they look.",
        "She said, \"We'll meet at 7:30 p.m. on Tuesday,\" and then she left.",
        "Don't panic! The server isn't down; it's only restarting.",
        "In 2024, roughly 3.5 billion people used a smartphone every day.",
        "HELLO WORLD, THIS IS A TEST OF UPPER CASE TEXT.",
        "they'd've gone if they could've, but y'all know how it is",
        "Email me at first.last+tag@example.com or visit https://example.org/a?b=c&d=e#f.",
    ],
    "latin_diacritics": [
        "Le cœur a ses raisons que la raison ne connaît point.",
        "Über den Wolken muss die Freiheit wohl grenzenlos sein, sagte Jürgen.",
        "¿Dónde está la biblioteca? ¡Está allí, señor!",
        "Zażółć gęślą jaźń — to polskie zdanie testowe.",
        "Tiếng Việt có rất nhiều dấu thanh điệu khác nhau.",
        "Çalışkan öğrenciler ödevlerini zamanında teslim eder.",
        "Þórður og Ásdís fóru til Reykjavíkur í gær.",
        "Ångström, Øresund og æbleskiver er danske og svenske ord.",
    ],
    "cyrillic": [
        "Съешь же ещё этих мягких французских булок, да выпей чаю.",
        "Москва — столица России, а Киев — столица Украины.",
        "Привет, мир! Как у тебя дела сегодня?",
        "Ґрунтовна їжа з'являється на столі щонеділі.",
        "В 1961 году Юрий Гагарин полетел в космос.",
        "ПРОГРАММИСТ ИСПРАВИЛ ОШИБКУ В КОДЕ.",
    ],
    "greek": [
        "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
        "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
        "Καλημέρα σας! Τι κάνετε σήμερα;",
        "ΑΡΧΙΜΗΔΗΣ: δῶς μοι πᾶ στῶ καὶ τὰν γᾶν κινάσω.",
    ],
    "arabic": [
        "مرحبا بالعالم، كيف حالك اليوم؟",
        "اللغة العربية جميلة جداً وغنية بالمفردات.",
        "وُلِدَ الشَّاعِرُ فِي عَامِ ١٩٢٠ فِي القَاهِرَةِ.",
        "ذهبت إلى السوق واشتريت ٣ تفاحات و١٢ برتقالة.",
    ],
    "hebrew": [
        "שלום עולם! מה שלומך היום?",
        "ירושלים היא עיר עתיקה מאוד.",
        "בְּרֵאשִׁית בָּרָא אֱלֹהִים אֵת הַשָּׁמַיִם.",
        "הוא קנה 5 ספרים ב-120 ש\"ח.",
    ],
    "devanagari": [
        "नमस्ते दुनिया! आप कैसे हैं?",
        "भारत एक विशाल और विविधतापूर्ण देश है।",
        "मैंने ४२ किताबें पढ़ीं और १०० पन्ने लिखे।",
        "संस्कृतं देवभाषा इति कथ्यते।",
    ],
    "chinese": [
        "你好，世界！今天天气怎么样？",
        "我喜欢在周末读书和喝茶。",
        "北京是中华人民共和国的首都，人口超过两千万。",
        "机器学习模型需要大量的训练数据。",
    ],
    "japanese": [
        "こんにちは、世界！お元気ですか？",
        "東京タワーは1958年に完成しました。",
        "カタカナとひらがなと漢字を混ぜて書きます。",
        "ｶﾀｶﾅの半角も時々使われる。",
    ],
    "korean": [
        "안녕하세요, 세계! 오늘 기분이 어떠세요?",
        "서울은 대한민국의 수도입니다.",
        "한글은 1443년에 세종대왕이 만들었습니다.",
    ],
    "thai": [
        "สวัสดีชาวโลก วันนี้เป็นอย่างไรบ้าง",
        "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
        "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    ],
    "other_scripts": [
        "გამარჯობა, მსოფლიო!",
        "Բարեւ, աշխարհ։ Ինչպե՞ս ես։",
        "ሰላም ለዓለም! እንዴት ነህ?",
        "বাংলা ভাষা খুব মিষ্টি।",
        "தமிழ் ஒரு பழமையான மொழி.",
        "ᠮᠣᠩᠭᠣᠯ ᠪᠢᠴᠢᠭ",
        "ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ",
        "𐌰𐌸𐍄𐌰 𐌿𐌽𐍃𐌰𐍂",
    ],
}

CODE = [
    # Python
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "import os\nfor root, dirs, files in os.walk('.'):\n\tprint(f\"{root!r}: {len(files)} files\")\n",
    "class Point:\n    __slots__ = ('x', 'y')\n\n    def __repr__(self):\n        return f'Point({self.x}, {self.y})'\n",
    # Rust
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "impl<'a, T: Clone + 'a> Iterator for Iter<'a, T> {\n    type Item = &'a T;\n    fn next(&mut self) -> Option<Self::Item> { self.inner.next() }\n}\n",
    "#[derive(Debug, Clone, PartialEq)]\npub enum Token { Word(String), Num(i64), Eof }\n",
    # JavaScript / TypeScript
    "const add = (a, b) => a + b;\nconsole.log(`sum=${add(2, 3)}`);\n",
    "export async function load(url: string): Promise<Response> {\n  const r = await fetch(url, { method: 'GET' });\n  if (!r.ok) throw new Error(`HTTP ${r.status}`);\n  return r;\n}\n",
    # C / C++
    "#include <stdio.h>\n\nint main(int argc, char **argv) {\n\tprintf(\"Hello, %s!\\n\", argc > 1 ? argv[1] : \"world\");\n\treturn 0;\n}\n",
    "template <typename T>\nstd::vector<T> twice(const std::vector<T>& v) {\n    std::vector<T> out; out.reserve(v.size() * 2);\n    for (auto& x : v) { out.push_back(x); out.push_back(x); }\n    return out;\n}\n",
    # Go
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tch := make(chan int, 3)\n\tgo func() { ch <- 42 }()\n\tfmt.Println(<-ch)\n}\n",
    # SQL
    "SELECT u.id, COUNT(*) AS n\nFROM users u JOIN orders o ON o.user_id = u.id\nWHERE o.created_at >= '2024-01-01'\nGROUP BY u.id HAVING COUNT(*) > 3;\n",
    # HTML / CSS
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Test</title></head>\n<body><p class=\"x\">Hi &amp; bye</p></body>\n</html>\n",
    ".btn:hover > span::after {\n  content: \"\\2192\";\n  margin: 0 4px 0 -2px;\n  color: #ff00aa;\n}\n",
    # JSON / YAML / TOML
    "{\"name\": \"bitnet\", \"version\": [1, 58], \"ok\": true, \"nested\": {\"a\": null, \"b\": -3.14e-10}}",
    "services:\n  app:\n    image: \"example/app:1.2.3\"\n    ports:\n      - \"8080:8080\"\n    environment:\n      - RUST_LOG=debug\n",
    "[package]\nname = \"demo\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\nserde = { version = \"1\", features = [\"derive\"] }\n",
    # Shell / Makefile
    "#!/bin/sh\nset -eu\nfor f in *.txt; do\n  wc -l \"$f\" | awk '{print $1}' >> counts.log\ndone\n",
    "all: build\n\nbuild:\n\tcargo build --release 2>&1 | tee build.log\n\n.PHONY: all build\n",
    # Lisp / Haskell / misc
    "(defun fact (n)\n  (if (<= n 1) 1 (* n (fact (- n 1)))))\n",
    "main :: IO ()\nmain = mapM_ (putStrLn . show) [x*x | x <- [1..10], even x]\n",
    "x = [[1, 2], [3, 4]]; y = x'; z = x .* y;  % MATLAB-ish\n",
    "    // indented comment with trailing spaces   \n\t\t/* tabbed block */\r\n",
]

EDGE = [
    "\ufffd", "a\ufffdb", "\ufffd\ufffd\ufffd", "\x00", "a\x00b", "\x00\x00 \x00",
    "\ufeff", "\ufeffHello", "Hello\ufeff", "\ue000", "\uf8ff", "\U000f0000", "\U0010fffd",
    "\U0010ffff", "\uffff", "\ufffe", "\ufdd0", "\u0378", "\U000e0001", "\U000323b0\U000323b1",
    "\ud7ff", "\ud7ff\ue000", "\x7f", "\x01\x02\x03\x1b[31mred\x1b[0m", "\x1c\x1d\x1e\x1f",
    "\u200b", "a\u200bb", "\u200c\u200d", "\u2060", "\u202eevil\u202c", "\u00ad", "soft\u00adhyphen",
    "\U0001d400\U0001d401\U0001d402", "ＡＢＣ１２３", "ﬁﬂﬀ", "Ǆǅǆ", "ß ẞ", "İı", "ſtraße",
    "\u1100\u1161\u11a8", "ﾊﾟｿｺﾝ", "\u0e01\u0e34\u0e4a", "\u0301", "\u0301\u0301a",
    "a\u0301\u0302\u0303\u0304\u0305\u0306\u0307", "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319",
    "\u0915\u094d\u0937", "\u05e9\u05c1\u05b8", "\u0628\u0650\u0633\u0652\u0645\u0650",
    "\u00e9", "e\u0301", "\u1e9b\u0323", "\u2126\u212b\u212a", "\u00bd\u2153\u2189", "\u2460\u2461\u2462",
    "\u2070\u00b9\u00b2\u00b3\u2074", "\u2160\u2161\u2162\u2163", "\u3007\u4e00\u4e8c\u4e09",
    "\U00010107\U00010108", "\U0001f100", "𝟘𝟙𝟚𝟛", "٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "०१२३४५६७८९",
    "๐๑๒๓", "０１２３４５６７８９",
]

EMOJI = [
    "😀", "😀😃😄😁", "👍", "👍🏻", "👍🏼", "👍🏽", "👍🏾", "👍🏿", "👋🏽 hi", "🤷‍♀️", "🤷🏾‍♂️",
    "👨‍👩‍👧‍👦", "👩‍❤️‍💋‍👨", "🧑‍💻", "👩🏿‍🚀", "🏳️‍🌈", "🏴‍☠️", "🇺🇸🇬🇧🇯🇵", "🇩🇪", "1️⃣2️⃣#️⃣",
    "❤️", "❤", "☺️", "✌🏻", "🏴󠁧󠁢󠁥󠁮󠁧󠁿", "🫠🫶🪿", "🐍 + 🦀 = ❤️", "I ❤️ NY", "done ✅", "⚠️ warning",
    "(╯°□°）╯︵ ┻━┻", "¯\\_(ツ)_/¯", "😀 😀  😀   😀", "😀\n😀\r\n😀", "a😀b", "1😀2",
]

SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|reserved_special_token_0|>", "<|reserved_special_token_5|>", "<|reserved_special_token_250|>",
]

# Special-token names for the other vocabularies (only used with a vocabulary argument, so the
# LLaMA-3 corpus stays as it was). Gemma's are the synthetic model's user-defined symbols.
RENAME = {
    "qwen3": {
        "<|begin_of_text|>": "<|im_start|>", "<|end_of_text|>": "<|endoftext|>",
        "<|eot_id|>": "<|im_end|>", "<|start_header_id|>": "<think>",
        "<|end_header_id|>": "</think>", "<|reserved_special_token_0|>": "<tool_call>",
        "<|reserved_special_token_5|>": "<|fim_prefix|>",
        "<|reserved_special_token_250|>": "<|vision_pad|>",
        "<|reserved_special_token_999|>": "<|vision_pad_9|>",
        "<|reserved_special_token_|>": "<|fim_|>", "<|EOT_ID|>": "<|IM_END|>",
    },
    "gemma": {
        "<|begin_of_text|>": "<start_of_turn>", "<|end_of_text|>": "<end_of_turn>",
        "<|eot_id|>": "<end_of_turn>", "<|start_header_id|>": "<start_of_image>",
        "<|end_header_id|>": "<end_of_image>", "<|reserved_special_token_0|>": "<mask>",
        "<|reserved_special_token_5|>": "[multimodal]",
        "<|reserved_special_token_250|>": "<start_of_image>",
        "<|reserved_special_token_999|>": "<mask_1>", "<|reserved_special_token_|>": "<mask_>",
        "<|EOT_ID|>": "<END_OF_TURN>",
    },
}

# More lines for the newer vocabularies: decomposed and composed forms (Qwen normalises to NFC),
# ▁ itself (Gemma's space), spelled-out special names of the other vocabularies, byte-like text.
EXTRA = [
    "e\u0301", "E\u0301cole", "Cafe\u0301 au lait", "\u00e9\u0301", "A\u030a", "\u212b", "\u2126hm",
    "\u1e9b\u0323", "q\u0307\u0323", "\u0928\u093c", "\u1100\u1161\u11a8", "\uac00\u11a8",
    "\u0041\u0308\u0304", "n\u0303o", "Zo\u0308e", "\u00c5ngstro\u0308m \u212bngstr\u00f6m",
    "\u2581", "\u2581\u2581x", "a\u2581b", " \u2581 ", "\u2581hello world", "x\u2581\u2581\u2581",
    "<bos>", "<eos>", "<pad>", "<unk>", "<bos>hello<eos>", "<|endoftext|>", "<|im_start|>user",
    "<0x41>", "<0xFF><0x00>", "<0x>", "\\xff\\xfe", "\\u00e9", "%C3%A9", "&#233;", "\ufffd\ufffd",
    "1\u00bd 2\u00be", "0123456789" * 5, "12 345 6789", "\u0661\u0662\u0663 123 \u0967\u0968",
    "\u6771\u4eac\u30bf\u30ef\u30fc 333m \ud55c\uad6d\uc5b4 \u0627\u0644\u0639\u0631\u0628\u064a\u0629",
]

WS = [" ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2028", "\u2029", "\x0b", "\x0c", "\u0085",
      "\u2009", "\u1680", "\u202f", "\u205f"]

APOSTROPHES = ["'", "\u2019", "\u2018", "\u02bc", "\u2032", "\uff07", "`", "\u00b4"]
CONTRACTIONS = ["s", "t", "re", "ve", "m", "ll", "d"]

PUNCT = ["!", "?", ".", ",", ";", ":", "-", "--", "—", "–", "…", "...", "!?", "?!", "***", "###",
         "«", "»", "“", "”", "„", "(", ")", "[", "]", "{", "}", "<", ">", "/", "\\", "|", "@",
         "#", "$", "%", "^", "&", "*", "_", "+", "=", "~", "¿", "¡", "。", "、", "「", "」",
         "·", "•", "§", "¶", "©", "®", "™", "°", "±", "×", "÷", "€", "£", "¥", "₿", "→", "⇒",
         "∀", "∑", "√", "∞", "≠", "≤"]


def all_cases(s):
    """Every upper/lower spelling of an ASCII word (2^len)."""
    out = [""]
    for ch in s:
        out = [p + c for p in out for c in sorted({ch.lower(), ch.upper()})]
    return out


def char_slices(rng, s, k):
    out = []
    for _ in range(k):
        a = rng.randrange(len(s))
        b = rng.randrange(a, len(s)) + 1
        out.append(s[a:b])
    return out


def random_codepoint(rng):
    pools = [
        (0x20, 0x7E), (0x00, 0x1F), (0xA0, 0x2FF), (0x300, 0x36F), (0x370, 0x52F),
        (0x591, 0x6FF), (0x900, 0xDFF), (0xE00, 0xEFF), (0x1100, 0x11FF), (0x2000, 0x206F),
        (0x20A0, 0x2BFF), (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xE000, 0xF8FF),
        (0xFB00, 0xFFFD), (0x10000, 0x1FFFF), (0x1F300, 0x1FAFF), (0x20000, 0x3347F),
        (0xE0000, 0xE01EF), (0xF0000, 0x10FFFF),
    ]
    lo, hi = rng.choice(pools)
    cp = rng.randrange(lo, hi + 1)
    if 0xD800 <= cp <= 0xDFFF:
        cp = 0xFFFD
    return chr(cp)


def generate(vocab="llama3"):
    rng = random.Random(SEED)
    ordinary = []
    special = []

    # Prose: as written, case variants, with surrounding white space, pairs, random slices.
    all_sentences = [s for group in PROSE.values() for s in group]
    for s in all_sentences:
        ordinary += [s, s.lower(), s.upper(), " " + s, s + "\n", "\n\n" + s + "  ", s.replace(" ", "  ")]
        ordinary += char_slices(rng, s, 6)
    for _ in range(120):
        a, b = rng.choice(all_sentences), rng.choice(all_sentences)
        ordinary.append(a + rng.choice([" ", "\n", "\n\n", "\t", " \n ", "", "\r\n"]) + b)
    for group in PROSE.values():
        ordinary.append(" ".join(group))
        ordinary.append("\n".join(group))

    # Code: whole snippets, single lines, tabs for spaces, CRLF line ends.
    for c in CODE:
        ordinary += [c, c.replace("    ", "\t"), c.replace("\n", "\r\n"), c.rstrip("\n")]
        ordinary += [line for line in c.split("\n") if line]
        ordinary += char_slices(rng, c, 4)

    # Digit runs of every length, in contexts, and other numeral systems.
    for n in range(1, 65):
        d = "".join(rng.choice("0123456789") for _ in range(n))
        ordinary += [d, " " + d, "x" + d, d + "px", "$" + d + ".99", "-" + d, d + "\n", "(" + d + ")"]
    for n in range(1, 20):
        ordinary.append("".join(rng.choice("٠١٢٣٤٥٦٧٨٩०१२३४५६७८९０１２３４５６７８９²³¹½") for _ in range(n)))
    ordinary += ["3.14159", "1,234,567.89", "1e-10", "0x7fffffff", "0b1010_1010", "192.168.0.1",
                 "2024-04-17T12:34:56Z", "+1 (555) 123-4567", "v1.2.3-rc.4", "10:30am", "1st 2nd 3rd 4th",
                 "100%", "12,5 €", "0.000001", "99999999999999999999", "１２３", "1/2/3/4/5"]

    # White space runs: every kind, repeated, in every context.
    for w in WS:
        for k in (1, 2, 3, 5):
            run = w * k
            for ctx in ("{}word", "word{}", "word{}word", "1{}2", "!{}?", "{}", "a{}\n", "\n{}b", "x{}{}y"):
                ordinary.append(ctx.replace("{}", run))
    for _ in range(150):
        run = "".join(rng.choice(WS) for _ in range(rng.randrange(1, 9)))
        ordinary.append(rng.choice(["", "a", "1", "!", "中", "😀"]) + run + rng.choice(["", "b", "2", "?", "文", "\n"]))
    ordinary += [" " * n for n in (1, 2, 3, 4, 7, 8, 15, 16, 31, 64)]
    ordinary += ["\t" * n for n in (1, 2, 3, 4, 8)]
    ordinary += ["\n" * n for n in (1, 2, 3, 4, 5, 10)]
    ordinary += ["\r\n" * n for n in (1, 2, 3)]
    ordinary += ["    indented\n        more\n\tand tabbed\n", "line1\r\nline2\rline3\nline4", "a \n\t \r\n b"]

    # Contractions: every case spelling, after words and alone, with apostrophe variants.
    for c in CONTRACTIONS:
        for spelled in all_cases(c):
            for ctx in ("I'{}", "'{}", "x'{}y", "'{} ", " '{}", "it'{}s", "'{}'{}"):
                ordinary.append(ctx.replace("{}", spelled))
    ordinary += ["I'LL", "don'T", "DON'T", "Don't", "WE'RE", "They'Ve", "she'D", "I'M", "can't've",
                 "rock 'n' roll", "'tis", "'twas", "o'clock", "'ſ", "'ſa", "x'ſ", "''s", "'''", "' s",
                 "'1", "'é", "'\u0301s", "'S'T'M'D"]
    for a in APOSTROPHES:
        for c in ("s", "ll", "T", "re"):
            ordinary += ["it" + a + c, a + c, a + c + " more", "x" + a + a + c]

    # Punctuation runs.
    for p in PUNCT:
        ordinary += [p, p * 3, " " + p, p + "\n", p + " x", "x" + p, " " + p + p + "\r\n\r\n"]
    for _ in range(80):
        ordinary.append("".join(rng.choice(PUNCT) for _ in range(rng.randrange(1, 12))))

    # Emoji, alone and in text.
    for e in EMOJI:
        ordinary += [e, " " + e, e + e, "word" + e + "word", e + "\n"]

    # Edge cases and combining marks.
    for e in EDGE:
        ordinary += [e, " " + e, e + " ", "a" + e + "b", e + e]

    # Long inputs (exercise long pieces: a run of letters or symbols is one piece).
    ordinary += [
        "a" * 3000,
        "ab" * 1500,
        "supercalifragilisticexpialidocious" * 60,
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4000)),
        "".join(rng.choice("абвгдеёжзийклмнопрстуфхцчшщъыьэюя") for _ in range(2000)),
        "".join(chr(rng.randrange(0x4E00, 0xA000)) for _ in range(2000)),
        "".join(rng.choice("0123456789") for _ in range(1000)),
        " " * 1000 + "x",
        "-" * 2000,
        "=+" * 700,
        "😀" * 300,
        "".join(rng.choice(EMOJI) for _ in range(200)),
        "\n".join(all_sentences) * 3,
        "".join(rng.choice(CODE) for _ in range(12)),
    ]

    # Random fuzz: code points from many blocks, short and medium lengths.
    for _ in range(500):
        n = rng.randrange(1, 40)
        ordinary.append("".join(random_codepoint(rng) for _ in range(n)))
    for _ in range(100):
        pieces = [rng.choice(all_sentences), rng.choice(CODE), rng.choice(EDGE), rng.choice(EMOJI),
                  rng.choice(WS) * rng.randrange(1, 4), rng.choice(PUNCT), str(rng.randrange(10**6))]
        rng.shuffle(pieces)
        ordinary.append("".join(pieces[: rng.randrange(2, len(pieces) + 1)]))

    # Special tokens (parsed), written with LLaMA-3's names and renamed for other vocabularies.
    specials = SPECIALS if vocab == "llama3" else [RENAME[vocab].get(t, t) for t in SPECIALS]
    special_start = len(special)
    # Special tokens (parsed): alone, adjacent, inside text and words, partial look-alikes.
    for s in specials:
        special += [s, s + s, "x" + s + "y", " " + s + " ", s + "\n\n", "Hello" + s + "world"]
    special += [
        "<|begin_of_text|>User: Hey, are you conscious?<|eot_id|>Assistant: ",
        "<|begin_of_text|>System: Be brief.<|eot_id|>User: 2+2?<|eot_id|>Assistant: 4<|eot_id|>User: and 3+3?<|eot_id|>Assistant: ",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|eot_id", "<|eot_id|", "eot_id|>", "<|<|eot_id|>|>", "<<|eot_id|>>", "<|EOT_ID|>", "< |eot_id|>",
        "<|reserved_special_token_999|>", "<|reserved_special_token_|>", "<|begin_of_text|",
        "<|eot_id|>\u00e9<|eot_id|>\u0301", "😀<|eot_id|>😀", "<|end_of_text|><|begin_of_text|>",
        "a<|eot_id|>'s", "it<|eot_id|>'ll", "1<|eot_id|>234", " <|eot_id|> ", "\n<|eot_id|>\n",
    ]
    for _ in range(80):
        parts = [rng.choice(all_sentences)[: rng.randrange(1, 30)] for _ in range(3)]
        special.append(rng.choice(specials).join(parts) + rng.choice(["", rng.choice(specials)]))

    if vocab != "llama3":
        for i in range(special_start, len(special)):
            for old, new in RENAME[vocab].items():
                special[i] = special[i].replace(old, new)
        ordinary += EXTRA

    # The special lines also appear as ordinary text (specials not parsed), except for the
    # SentencePiece vocabulary, whose reference always matches its user-defined tokens.
    if vocab != "gemma":
        ordinary += special

    seen = set()
    rows = []
    for text, sp in [(t, False) for t in ordinary] + [(t, True) for t in special]:
        if not text or (text, sp) in seen:
            continue
        seen.add((text, sp))
        rows.append({"text": text, "special": sp})
    return rows


def main():
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] not in RENAME):
        sys.exit("usage: gen_tokenizer_corpus.py OUT.jsonl [qwen3|gemma]  (default: llama3)")
    rows = generate(sys.argv[2] if len(sys.argv) == 3 else "llama3")
    with open(sys.argv[1], "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    n_special = sum(r["special"] for r in rows)
    size = sum(len(r["text"].encode()) for r in rows)
    print(f"wrote {len(rows)} lines ({n_special} with special tokens, {size} bytes of text) "
          f"to {sys.argv[1]}", file=sys.stderr)


if __name__ == "__main__":
    main()
