"""The reference language's grammar: word lists and a recursive, feature-carrying rule generator.

Nonterminals are tuples (name, *features); `rules(nt)` returns its alternatives as
(probability, right-hand side) pairs, each side a tuple of words (str) and nonterminals. The
grammar is LL(1) by construction (`language.py` checks it): every choice is decided by the next
word, so each sentence has exactly one derivation and prefixes can be scored exactly.

Long-range structure:
- number agreement: a subject's noun picks singular or plural, and the rule that emits the noun
  also pushes its continuation (the verb phrase, or the verb of an object-gap relative clause)
  in that number, so agreement spans adjectives, prepositional phrases and relative clauses:
  "the cats near the old tree that the dog chases often sleep";
- determiner-noun agreement: a/an (by the next word's first letter), this/every... (singular),
  these/many... (plural), the/my/no... (either);
- matched quotes and brackets: `says " CLAUSE "` and `( that ... )`;
- optional clauses: because/but tails, if/when ... , then ..., that-complements, relatives.
"""
from dataclasses import dataclass

END = "</s>"  # end marker terminal (the sentence's last token; the tokenizer's eos)

# (singular, plural) pairs; consonant-initial and vowel-initial nouns are kept apart for a/an.
NOUNS_C = [
    ("cat", "cats"), ("dog", "dogs"), ("bird", "birds"), ("fox", "foxes"), ("horse", "horses"),
    ("rabbit", "rabbits"), ("mouse", "mice"), ("child", "children"), ("man", "men"),
    ("woman", "women"), ("teacher", "teachers"), ("doctor", "doctors"), ("farmer", "farmers"),
    ("king", "kings"), ("queen", "queens"), ("girl", "girls"), ("boy", "boys"),
    ("friend", "friends"), ("baker", "bakers"), ("pilot", "pilots"), ("sailor", "sailors"),
    ("student", "students"), ("tiger", "tigers"), ("lion", "lions"), ("wolf", "wolves"),
    ("goat", "goats"), ("robot", "robots"), ("poet", "poets"), ("judge", "judges"),
    ("nurse", "nurses"), ("painter", "painters"), ("dancer", "dancers"), ("singer", "singers"),
    ("hunter", "hunters"), ("neighbor", "neighbors"), ("monkey", "monkeys"),
    ("spider", "spiders"), ("parrot", "parrots"), ("baby", "babies"), ("thief", "thieves"),
]
NOUNS_V = [
    ("owl", "owls"), ("eagle", "eagles"), ("elephant", "elephants"), ("artist", "artists"),
    ("engineer", "engineers"), ("officer", "officers"), ("uncle", "uncles"), ("aunt", "aunts"),
    ("actor", "actors"), ("editor", "editors"), ("inventor", "inventors"), ("otter", "otters"),
    ("ant", "ants"), ("emu", "emus"), ("iguana", "iguanas"), ("octopus", "octopi"),
]
ADJ_C = [
    "big", "small", "tall", "short", "happy", "sad", "quiet", "loud", "brave", "clever",
    "lazy", "busy", "gentle", "tired", "hungry", "funny", "proud", "curious", "nervous",
    "calm", "kind", "young", "strange", "famous", "lucky", "silly", "polite", "wild", "rich",
    "poor", "green", "red",
]
ADJ_V = ["old", "angry", "eager", "elegant", "odd", "upset", "anxious", "idle", "ugly", "awkward"]
# (3rd person singular, plural) verb pairs, one list per frame; the lists are disjoint.
VERBS_INTRANSITIVE = [
    ("sleeps", "sleep"), ("runs", "run"), ("laughs", "laugh"), ("sings", "sing"),
    ("dances", "dance"), ("waits", "wait"), ("smiles", "smile"), ("cries", "cry"),
    ("jumps", "jump"), ("swims", "swim"), ("works", "work"), ("falls", "fall"),
    ("arrives", "arrive"), ("leaves", "leave"), ("rests", "rest"), ("hides", "hide"),
]
VERBS_TRANSITIVE = [
    ("sees", "see"), ("likes", "like"), ("chases", "chase"), ("follows", "follow"),
    ("helps", "help"), ("finds", "find"), ("watches", "watch"), ("calls", "call"),
    ("visits", "visit"), ("admires", "admire"), ("feeds", "feed"), ("pushes", "push"),
    ("teaches", "teach"), ("meets", "meet"), ("loves", "love"), ("hates", "hate"),
    ("ignores", "ignore"), ("trusts", "trust"), ("greets", "greet"), ("fears", "fear"),
]
VERBS_THINK = [("thinks", "think"), ("believes", "believe"), ("hopes", "hope"), ("claims", "claim")]
VERBS_SAY = [("says", "say"), ("whispers", "whisper"), ("writes", "write"), ("yells", "yell")]
ADVERBS = ["often", "never", "always", "rarely", "quietly", "suddenly", "still", "usually"]
PREPOSITIONS = ["near", "behind", "beside", "under", "above", "with", "without", "from", "inside", "beyond"]
DET_SG = ["this", "every", "each", "one"]
DET_PL = ["these", "those", "many", "several", "two", "three", "some"]
DET_ANY = ["the", "my", "your", "our", "their", "his", "her", "no"]
FUNCTION_WORDS = ["a", "an", "that", "because", "but", "if", "then", "when", ".", ",", '"', "(", ")"]


@dataclass(frozen=True)
class GrammarConfig:
    """Sizes of the grammar. `words_per_class` keeps the first k words of every word list
    (None: all); the depths bound recursion, so the language is finite."""
    words_per_class: int | None = None
    max_adjectives: int = 2          # before a noun (one inside prepositional phrases)
    max_clause_depth: int = 1        # that-complements, quotes, if/when/because clauses
    max_relative_depth: int = 1      # nesting of relative clauses (1: none inside another)
    pp: bool = True                  # prepositional phrases on nouns and intransitive verbs


def tiny_config():
    """A small enumerable instance (~190k sentences): one word per class, relative clauses with
    agreement and brackets, no adjectives, prepositions or clause embedding."""
    return GrammarConfig(words_per_class=1, max_adjectives=0, max_clause_depth=0, max_relative_depth=1, pp=False)


def _zipf(k):
    """Within a word class, the i-th word has weight 1/(i+2): skewed, like real text."""
    w = [1.0 / (i + 2) for i in range(k)]
    s = sum(w)
    return [x / s for x in w]


class Grammar:
    """Rule generator for one GrammarConfig. `start` is the start symbol."""

    start = ("START",)

    def __init__(self, config: GrammarConfig = GrammarConfig()):
        self.config = config
        k = config.words_per_class
        cut = (lambda xs: list(xs[:k])) if k else list
        nc, nv = cut(NOUNS_C), cut(NOUNS_V)
        vi, vt, vth, vsay = cut(VERBS_INTRANSITIVE), cut(VERBS_TRANSITIVE), cut(VERBS_THINK), cut(VERBS_SAY)
        self.classes = {
            "noun_sg_c": [s for s, _ in nc], "noun_sg_v": [s for s, _ in nv],
            "noun_sg": [s for s, _ in nc + nv], "noun_pl": [p for _, p in nc + nv],
            "adj_c": cut(ADJ_C), "adj_v": cut(ADJ_V), "adj": cut(ADJ_C) + cut(ADJ_V),
            "vi_sg": [s for s, _ in vi], "vi_pl": [p for _, p in vi],
            "vt_sg": [s for s, _ in vt], "vt_pl": [p for _, p in vt],
            "vthink_sg": [s for s, _ in vth], "vthink_pl": [p for _, p in vth],
            "vsay_sg": [s for s, _ in vsay], "vsay_pl": [p for _, p in vsay],
            "adv": cut(ADVERBS), "prep": cut(PREPOSITIONS),
            "det_sg": cut(DET_SG), "det_pl": cut(DET_PL), "det_any": cut(DET_ANY),
        }

    def words(self):
        """Every terminal word, in a fixed order (the tokenizer's vocabulary order)."""
        seen = dict.fromkeys(FUNCTION_WORDS)
        for ws in self.classes.values():
            seen.update(dict.fromkeys(ws))
        return list(seen)

    def rules(self, nt):
        """Alternatives of nonterminal `nt` as [(probability, rhs tuple)]; probabilities sum to 1."""
        return getattr(self, "_" + nt[0])(*nt[1:])

    # --- sentence level -------------------------------------------------------------------
    def _START(self):
        return [(1.0, (("TOP",), END))]

    def _TOP(self):
        """A clause, or (when clauses may embed) two clauses joined by if/when/because/but."""
        if self.config.max_clause_depth == 0:
            return [(1.0, (("CLAUSE", 0), "."))]
        c0, c1 = ("CLAUSE", 0), ("CLAUSE", 1)
        return [
            (0.80, (c0, ("TAIL",))),
            (0.12, ("if", c1, ",", "then", c1, ".")),
            (0.08, ("when", c1, ",", c1, ".")),
        ]

    def _TAIL(self):
        c1 = ("CLAUSE", 1)
        return [(0.75, (".",)), (0.15, ("because", c1, ".")), (0.10, ("but", c1, "."))]

    def _CLAUSE(self, depth):
        return [(1.0, (("NP", "subj", ("VP", depth), 0),))]

    # --- noun phrases ---------------------------------------------------------------------
    def _NP(self, role, cont, rel):
        """role: subj (continuation pushed after the noun, in its number), obj, or simple (no
        modifiers after the noun); rel: relative-clause depth so far."""
        adj = 1 if role == "simple" else self.config.max_adjectives
        nbar = lambda num: ("NBAR", num, adj, role, cont, rel)
        return [
            (0.45, (("W", "det_any"), nbar("any"))),
            (0.15, ("a", nbar("sg_c"))),
            (0.05, ("an", nbar("sg_v"))),
            (0.15, (("W", "det_sg"), nbar("sg"))),
            (0.20, (("W", "det_pl"), nbar("pl"))),
        ]

    def _NBAR(self, num, adj_left, role, cont, rel):
        """Adjectives then the noun; `num` is what the determiner allows (sg_c/sg_v: singular,
        starting with a consonant/vowel sound)."""
        out = []
        p_adj = 0.3 if adj_left > 0 else 0.0
        if p_adj:
            adj_class = {"sg_c": "adj_c", "sg_v": "adj_v"}.get(num, "adj")
            after = "sg" if num in ("sg_c", "sg_v") else num
            out.append((p_adj, (("W", adj_class), ("NBAR", after, adj_left - 1, role, cont, rel))))
        numbers = {"any": [("sg", 0.55), ("pl", 0.45)], "sg": [("sg", 1.0)], "pl": [("pl", 1.0)],
                   "sg_c": [("sg", 1.0)], "sg_v": [("sg", 1.0)]}[num]
        for n, p in numbers:
            noun = {"sg_c": "noun_sg_c", "sg_v": "noun_sg_v"}.get(num, "noun_" + n)
            rhs = (("W", noun),)
            if role != "simple":
                rhs += (("POST", n, role, rel),)
            if cont is not None:
                rhs += (cont + (n,),)
            out.append(((1 - p_adj) * p, rhs))
        return out

    def _POST(self, number, role, rel):
        """Optional prepositional phrase, then optional relative clause (bracketed for subjects)."""
        rc = ("RCOPT", number, role, rel)
        if not self.config.pp:
            return [(1.0, (rc,))]
        return [(0.2, (("PP",), rc)), (0.8, (rc,))]

    def _RCOPT(self, number, role, rel):
        if rel >= self.config.max_relative_depth:
            return [(1.0, ())]
        rc = ("RC", number, rel + 1)
        if role == "subj":
            return [(0.15, (rc,)), (0.05, ("(", rc, ")")), (0.80, ())]
        return [(0.12, (rc,)), (0.88, ())]

    def _PP(self):
        return [(1.0, (("W", "prep"), ("NP", "simple", None, 0)))]

    def _RC(self, number, rel):
        return [(1.0, ("that", ("RCBODY", number, rel)))]

    def _RCBODY(self, number, rel):
        """Intransitive verb | transitive verb + object | subject + verb with an object gap."""
        return [
            (0.35, (("W", "vi_" + number),)),
            (0.35, (("W", "vt_" + number), ("NP", "obj", None, rel))),
            (0.30, (("NP", "subj", ("GAP",), rel),)),
        ]

    def _GAP(self, number):
        return [(1.0, (("W", "vt_" + number),))]

    # --- verb phrases ---------------------------------------------------------------------
    def _VP(self, depth, number):
        return [(0.15, (("W", "adv"), ("VCORE", depth, number))), (0.85, (("VCORE", depth, number),))]

    def _VCORE(self, depth, n):
        alts = [(0.35, (("W", "vi_" + n), ("VIPOST",))), (0.45, (("W", "vt_" + n), ("NP", "obj", None, 0)))]
        if depth < self.config.max_clause_depth:
            inner = ("CLAUSE", depth + 1)
            alts += [(0.12, (("W", "vthink_" + n), "that", inner)), (0.08, (("W", "vsay_" + n), '"', inner, '"'))]
        else:
            total = sum(p for p, _ in alts)
            alts = [(p / total, rhs) for p, rhs in alts]
        return alts

    def _VIPOST(self):
        """An intransitive verb may take a prepositional phrase."""
        return [(0.3, (("PP",),)), (0.7, ())] if self.config.pp else [(1.0, ())]

    # --- words ----------------------------------------------------------------------------
    def _W(self, word_class):
        ws = self.classes[word_class]
        return [(p, (w,)) for p, w in zip(_zipf(len(ws)), ws)]
