"""Tasks for in-context learning: built-in word tasks, the paper's HF datasets, local files.

A :class:`Task` is a list of ``(input, label)`` examples and a two-line template::

    Word: hot            <- input_prefix + " " + input
    Antonym: cold        <- output_prefix + " " + label

Demonstrations are separated by a blank line. The examples are split once, with a
fixed shuffle, into a *demonstration pool* and a *test set* (``n_test`` examples);
:meth:`Task.demonstrations` draws ``k`` of the pool per seed.

Classification tasks have fixed ``label_words`` (every test example is scored
against all of them); open tasks (antonyms, capitals) score the right label
against ``n_options - 1`` distractors drawn from the task's other labels.

Prompts are built as token ids, piece by piece (:class:`PromptBuilder`), so the
span of the test input inside the prompt is known exactly.

Built-in tasks (:data:`BUILTIN_TASKS`, written for this project): ``antonyms``,
``country_capital``, ``sentiment`` (short reviews, positive/negative) and
``word_category`` (animal/food/vehicle/clothing). The paper's tasks load through
Hugging Face ``datasets`` (:func:`load_hf_task`), your own through
:func:`load_task_file` (CSV or JSONL); all three give the same :class:`Task`.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass(frozen=True)
class Example:
    input: str
    label: str


@dataclass(frozen=True)
class Task:
    """A few-shot task: examples, template, and how predictions are scored."""

    name: str
    examples: tuple[Example, ...]
    input_prefix: str = "Input:"
    output_prefix: str = "\nOutput:"
    label_words: tuple[str, ...] | None = None  # fixed options (classification); None: open task
    n_options: int = 4  # open tasks: right label + n_options - 1 distractors
    n_test: int = 100
    separator: str = "\n\n"
    description: str = ""
    split_seed: int = 0

    def __post_init__(self):
        if len(self.examples) < self.n_test + 1:
            raise ValueError(
                f"Task '{self.name}' has {len(self.examples)} examples; it needs more than n_test={self.n_test} "
                "(the rest are the demonstration pool). Lower n_test or add examples."
            )
        if self.label_words is not None:
            unknown = sorted({e.label for e in self.examples} - set(self.label_words))
            if unknown:
                raise ValueError(f"Task '{self.name}': labels {unknown} are not among label_words {self.label_words}.")

    @property
    def is_classification(self) -> bool:
        return self.label_words is not None

    def _order(self) -> list[int]:
        order = list(range(len(self.examples)))
        random.Random(self.split_seed).shuffle(order)
        return order

    @property
    def test_set(self) -> list[Example]:
        return [self.examples[i] for i in self._order()[: self.n_test]]

    @property
    def pool(self) -> list[Example]:
        """Examples available as demonstrations (never in the test set)."""
        return [self.examples[i] for i in self._order()[self.n_test :]]

    def demonstrations(self, k: int, seed: int) -> list[Example]:
        """The first ``k`` pool examples after a shuffle seeded by ``seed``."""
        pool = self.pool
        if not isinstance(k, int) or k < 0:
            raise ValueError(f"k must be a non-negative integer, got {k!r}.")
        if k > len(pool):
            raise ValueError(
                f"k={k} demonstrations asked for, but task '{self.name}' has only {len(pool)} in its "
                f"demonstration pool ({len(self.examples)} examples, {self.n_test} held out for testing). "
                f"Use k <= {len(pool)} or a smaller n_test."
            )
        order = list(range(len(pool)))
        random.Random(1000 + seed).shuffle(order)
        return [pool[i] for i in order[:k]]

    def validation(self, k: int, seed: int) -> list[Example]:
        """Pool examples not drawn as demonstrations for (k, seed): for choosing a learning rate."""
        demos = set(self.demonstrations(k, seed))
        return [e for e in self.pool if e not in demos]

    def options(self, example: Example) -> tuple[list[str], int]:
        """Label options for ``example`` and the index of the right one."""
        if self.label_words is not None:
            return list(self.label_words), self.label_words.index(example.label)
        others = sorted({e.label for e in self.examples} - {example.label})
        rng = random.Random(f"{self.name}:{example.input}")
        opts = rng.sample(others, min(self.n_options - 1, len(others))) + [example.label]
        rng.shuffle(opts)
        return opts, opts.index(example.label)


# -- prompts as token ids ------------------------------------------------------------------


@dataclass
class Prompt:
    """Token ids of a prompt ending right before the label, and where the test input sits."""

    ids: list[int]
    input_span: tuple[int, int]  # [start, end) of the test input's tokens in ids
    options: list[list[int]] = field(default_factory=list)  # token ids of each label option
    answer: int = 0  # index of the right option

    @property
    def last(self) -> int:
        return len(self.ids) - 1


class PromptBuilder:
    """Tokenises a task's pieces separately and concatenates them, so every span is exact."""

    def __init__(self, task: Task, tokenizer, max_positions: int | None = None):
        self.task, self.tok = task, tokenizer
        self.max_positions = max_positions
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.bos = [] if bos is None else [bos]
        self._prefix = self._encode(task.input_prefix, "input_prefix")
        self._suffix = self._encode(task.output_prefix, "output_prefix")
        self._sep = self._encode(task.separator, "separator")
        if task.label_words is not None:
            for w in task.label_words:
                self.label_ids(w)

    def _encode(self, text: str, what: str) -> list[int]:
        ids = self.tok(text, add_special_tokens=False).input_ids
        if not ids and text:
            raise ValueError(f"Task '{self.task.name}': {what} {text!r} tokenizes to nothing.")
        return ids

    def label_ids(self, label: str) -> list[int]:
        ids = self.tok(" " + label.strip(), add_special_tokens=False).input_ids
        if not label.strip() or not ids:
            raise ValueError(
                f"Task '{self.task.name}': label word {label!r} tokenizes to nothing; every label needs "
                "at least one token. Fix the task's label words."
            )
        return ids

    def input_ids(self, text: str) -> list[int]:
        ids = self.tok(" " + text.strip(), add_special_tokens=False).input_ids
        if not ids:
            raise ValueError(f"Task '{self.task.name}': the input {text!r} tokenizes to nothing.")
        return ids

    def query(self, example: Example) -> tuple[list[int], list[int]]:
        """(prefix + input + output prefix) ids and the input's own ids."""
        x = self.input_ids(example.input)
        return self._prefix + x + self._suffix, x

    def demonstration(self, example: Example) -> list[int]:
        """One demonstration block with its separator: prefix, input, output prefix, label, separator."""
        q, _ = self.query(example)
        return q + self.label_ids(example.label) + self._sep

    def training_sequence(self, example: Example) -> tuple[list[int], list[int]]:
        """A finetuning sequence BOS + template(input) + label, and the positions of the label tokens."""
        q, _ = self.query(example)
        y = self.label_ids(example.label)
        ids = self.bos + q + y
        return ids, list(range(len(ids) - len(y), len(ids)))

    def prompt(self, example: Example, demos: list[Example] = ()) -> Prompt:
        """BOS + demonstrations + the test query, ready for its label."""
        ids = list(self.bos)
        for d in demos:
            ids += self.demonstration(d)
        q, x = self.query(example)
        start = len(ids) + len(self._prefix)
        ids += q
        opts, answer = self.task.options(example)
        option_ids = [self.label_ids(o) for o in opts]
        need = len(ids) + max(len(o) for o in option_ids)
        if self.max_positions is not None and need > self.max_positions:
            fit = self.max_fitting_k(example, demos)
            raise ValueError(
                f"k={len(demos)} demonstrations make a {need}-token prompt, longer than the model's "
                f"context of {self.max_positions} positions: at most {fit} of these demonstrations fit. "
                f"Use k <= {fit}."
            )
        return Prompt(ids, (start, start + len(x)), option_ids, answer)

    def max_fitting_k(self, example: Example, demos: list[Example]) -> int:
        """How many of ``demos`` (in order) fit in the context with ``example``'s query and label."""
        q, _ = self.query(example)
        longest = max(len(self.label_ids(o)) for o in self.task.options(example)[0])
        used = len(self.bos) + len(q) + longest
        n = 0
        for d in demos:
            used += len(self.demonstration(d))
            if self.max_positions is not None and used > self.max_positions:
                break
            n += 1
        return n


def model_context(model) -> int | None:
    """Positions the model can attend over (``max_position_embeddings``), if it says."""
    c = getattr(model, "config", None)
    return getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None)


# -- built-in tasks ------------------------------------------------------------------------

_ANTONYMS = """hot cold|big small|up down|fast slow|happy sad|dark light|young old|rich poor|hard soft|open closed
early late|strong weak|high low|full empty|wet dry|clean dirty|long short|thick thin|heavy light|true false
good bad|love hate|win lose|push pull|buy sell|give take|begin end|first last|inside outside|above below
before after|top bottom|left right|north south|east west|day night|black white|friend enemy|war peace|alive dead
cheap expensive|safe dangerous|easy difficult|quiet loud|near far|tall short|wide narrow|deep shallow|sharp dull|smooth rough
sweet sour|brave cowardly|polite rude|kind cruel|wise foolish|clever stupid|beautiful ugly|accept reject|add subtract|agree disagree
always never|ancient modern|asleep awake|attack defend|backward forward|boring interesting|borrow lend|build destroy|cause effect|come go
correct wrong|increase decrease|enter exit|even odd|export import|fail succeed|female male|find lose|float sink|forget remember
freeze melt|frequent rare|future past|generous selfish|gentle rough|guilty innocent|hello goodbye|hero villain|horizontal vertical|include exclude
input output|joy sorrow|laugh cry|lead follow|legal illegal|less more|maximum minimum|minor major|morning evening|natural artificial
noisy quiet|obey disobey|on off|optimist pessimist|plus minus|positive negative|present absent|private public|question answer|raise lower
receive send|rise fall|sick healthy|spend save|start finish|stand sit|success failure|summer winter|tame wild|teacher student
tight loose|tiny huge|together apart|under over|upper lower|victory defeat|visible invisible|warm cool|whisper shout|yes no
mother father|king queen|boy girl|brother sister|husband wife|uncle aunt|son daughter|man woman|dawn dusk|sunrise sunset
heaven hell|internal external|inhale exhale|ascend descend|expand contract|pass fail|careful careless|possible impossible|honest dishonest|patient impatient
mature immature|proper improper|regular irregular|responsible irresponsible|relevant irrelevant|arrive depart|dangerous safe|lazy hardworking|thin fat|dry wet"""

_CAPITALS = """France:Paris|Germany:Berlin|Italy:Rome|Spain:Madrid|Portugal:Lisbon|United Kingdom:London|Ireland:Dublin
Belgium:Brussels|Netherlands:Amsterdam|Switzerland:Bern|Austria:Vienna|Poland:Warsaw|Czech Republic:Prague|Slovakia:Bratislava
Hungary:Budapest|Romania:Bucharest|Bulgaria:Sofia|Greece:Athens|Turkey:Ankara|Serbia:Belgrade|Croatia:Zagreb|Slovenia:Ljubljana
Bosnia and Herzegovina:Sarajevo|Albania:Tirana|North Macedonia:Skopje|Montenegro:Podgorica|Denmark:Copenhagen|Norway:Oslo
Sweden:Stockholm|Finland:Helsinki|Iceland:Reykjavik|Estonia:Tallinn|Latvia:Riga|Lithuania:Vilnius|Belarus:Minsk|Ukraine:Kyiv
Moldova:Chisinau|Russia:Moscow|Georgia:Tbilisi|Armenia:Yerevan|Azerbaijan:Baku|Kazakhstan:Astana|Uzbekistan:Tashkent
Turkmenistan:Ashgabat|Kyrgyzstan:Bishkek|Tajikistan:Dushanbe|Afghanistan:Kabul|Pakistan:Islamabad|India:New Delhi|Nepal:Kathmandu
Bhutan:Thimphu|Bangladesh:Dhaka|Sri Lanka:Colombo|China:Beijing|Mongolia:Ulaanbaatar|Japan:Tokyo|South Korea:Seoul
North Korea:Pyongyang|Taiwan:Taipei|Vietnam:Hanoi|Laos:Vientiane|Cambodia:Phnom Penh|Thailand:Bangkok|Myanmar:Naypyidaw
Malaysia:Kuala Lumpur|Indonesia:Jakarta|Philippines:Manila|Brunei:Bandar Seri Begawan|East Timor:Dili|Australia:Canberra
New Zealand:Wellington|Papua New Guinea:Port Moresby|Fiji:Suva|Iran:Tehran|Iraq:Baghdad|Syria:Damascus|Lebanon:Beirut
Jordan:Amman|Saudi Arabia:Riyadh|Yemen:Sanaa|Oman:Muscat|United Arab Emirates:Abu Dhabi|Qatar:Doha|Bahrain:Manama
Egypt:Cairo|Libya:Tripoli|Tunisia:Tunis|Algeria:Algiers|Morocco:Rabat|Sudan:Khartoum|South Sudan:Juba|Ethiopia:Addis Ababa
Eritrea:Asmara|Somalia:Mogadishu|Kenya:Nairobi|Uganda:Kampala|Tanzania:Dodoma|Rwanda:Kigali|Burundi:Gitega|Nigeria:Abuja
Ghana:Accra|Senegal:Dakar|Mali:Bamako|Niger:Niamey|Chad:N'Djamena|Cameroon:Yaounde|Gabon:Libreville|Angola:Luanda
Zambia:Lusaka|Zimbabwe:Harare|Mozambique:Maputo|Malawi:Lilongwe|Botswana:Gaborone|Namibia:Windhoek|South Africa:Pretoria
Madagascar:Antananarivo|Liberia:Monrovia|Sierra Leone:Freetown|Guinea:Conakry|Ivory Coast:Yamoussoukro|Burkina Faso:Ouagadougou
Benin:Porto-Novo|Togo:Lome|Mauritania:Nouakchott|Gambia:Banjul|Republic of the Congo:Brazzaville
Democratic Republic of the Congo:Kinshasa|Central African Republic:Bangui|Lesotho:Maseru|Eswatini:Mbabane|Canada:Ottawa
United States:Washington|Mexico:Mexico City|Guatemala:Guatemala City|Honduras:Tegucigalpa|El Salvador:San Salvador
Nicaragua:Managua|Costa Rica:San Jose|Panama:Panama City|Cuba:Havana|Jamaica:Kingston|Haiti:Port-au-Prince
Dominican Republic:Santo Domingo|Bahamas:Nassau|Barbados:Bridgetown|Trinidad and Tobago:Port of Spain|Colombia:Bogota
Venezuela:Caracas|Ecuador:Quito|Peru:Lima|Brazil:Brasilia|Chile:Santiago|Argentina:Buenos Aires|Uruguay:Montevideo
Paraguay:Asuncion|Guyana:Georgetown|Suriname:Paramaribo|Cyprus:Nicosia|Malta:Valletta|Israel:Jerusalem|Kuwait:Kuwait City"""

_REVIEW_SUBJECTS = [
    "The movie", "The food", "This phone", "The hotel room", "The service", "The book", "This laptop",
    "The concert", "The coffee", "The staff", "This game", "The restaurant", "The headphones", "The show",
    "The pizza",
]
_POSITIVE = [
    "was wonderful", "was absolutely delightful", "exceeded all my expectations", "was a real pleasure",
    "made my day", "was excellent from start to finish", "is worth every penny", "was fantastic",
    "left me very happy", "was great and I loved it", "was superb", "is simply brilliant",
]
_NEGATIVE = [
    "was terrible", "was a complete waste of money", "disappointed me badly", "was awful", "made me angry",
    "was boring from start to finish", "is not worth the price", "was horrible", "left me very unhappy",
    "was bad and I hated it", "was dreadful", "is simply useless",
]

_CATEGORIES = {
    "animal": "dog cat horse cow lion tiger elephant rabbit mouse wolf bear fox deer monkey giraffe zebra sheep goat "
    "pig eagle owl shark whale dolphin snake frog turtle camel kangaroo penguin parrot duck hen squirrel bee spider",
    "food": "bread cheese apple banana rice pasta pizza soup salad carrot potato tomato orange grape cake cookie "
    "butter egg steak sandwich noodles yogurt honey lemon cherry strawberry onion garlic pie pancake cereal peach "
    "pear mango beans chocolate",
    "vehicle": "car bus truck bicycle train airplane helicopter boat ship motorcycle scooter tractor van taxi subway "
    "tram ambulance submarine rocket canoe yacht jeep limousine sled skateboard ferry jet kayak minivan wagon "
    "trolley glider cart raft sailboat bulldozer",
    "clothing": "shirt pants dress skirt jacket coat sweater hat scarf gloves socks shoes boots belt tie blouse "
    "jeans shorts hoodie vest uniform pajamas sandals sneakers cap suit robe gown mittens apron tuxedo bikini "
    "overalls cardigan raincoat slippers",
}


def _pairs(text: str, sep: str) -> tuple[Example, ...]:
    items = [p.strip() for line in text.splitlines() for p in line.split("|") if p.strip()]
    return tuple(Example(*[s.strip() for s in p.split(sep, 1)]) for p in items)


def _reviews() -> tuple[Example, ...]:
    rng = random.Random(7)
    out = []
    for label, preds in (("positive", _POSITIVE), ("negative", _NEGATIVE)):
        combos = [f"{s} {p}." for s in _REVIEW_SUBJECTS for p in preds]
        out += [Example(text, label) for text in rng.sample(combos, 80)]
    return tuple(out)


def _categories() -> tuple[Example, ...]:
    return tuple(Example(w, label) for label, words in _CATEGORIES.items() for w in words.split())


def _builtin(name: str) -> Task:
    if name == "antonyms":
        return Task(name, _pairs(_ANTONYMS, " "), "Word:", "\nAntonym:",
                    description="word -> its antonym (open: right answer vs 3 distractors)")
    if name == "country_capital":
        return Task(name, _pairs(_CAPITALS, ":"), "Country:", "\nCapital:",
                    description="country -> its capital city (open: right answer vs 3 distractors)")
    if name == "sentiment":
        return Task(name, _reviews(), "Review:", "\nSentiment:", label_words=("positive", "negative"),
                    description="short review -> positive / negative (classification)")
    if name == "word_category":
        return Task(name, _categories(), "Word:", "\nCategory:", label_words=tuple(_CATEGORIES),
                    description="word -> animal / food / vehicle / clothing (classification)")
    raise KeyError(name)


BUILTIN_TASKS = ("antonyms", "country_capital", "sentiment", "word_category")

# name -> (dataset path, config, split, input fields, label field, label words by class id,
#          input prefix, output prefix)
HF_TASKS: dict[str, tuple] = {
    "sst2": ("glue", "sst2", "train", ("sentence",), "label", ("negative", "positive"), "Review:", "\nSentiment:"),
    "sst5": ("SetFit/sst5", None, "train", ("text",), "label", ("terrible", "bad", "okay", "good", "great"),
             "Review:", "\nSentiment:"),
    "mr": ("rotten_tomatoes", None, "train", ("text",), "label", ("negative", "positive"), "Review:", "\nSentiment:"),
    "subj": ("SetFit/subj", None, "train", ("text",), "label", ("objective", "subjective"), "Input:", "\nType:"),
    "agnews": ("ag_news", None, "train", ("text",), "label", ("world", "sports", "business", "technology"),
               "Article:", "\nTopic:"),
    "cb": ("super_glue", "cb", "train", ("premise", "hypothesis"), "label", ("true", "false", "neither"),
           "Premise:", "\nAnswer:"),
}


def get_task(name: str | Task, n_test: int | None = None) -> Task:
    """A built-in task or one of the paper's HF tasks by name (a :class:`Task` passes through)."""
    if isinstance(name, Task):
        task = name
    elif name in BUILTIN_TASKS:
        task = _builtin(name)
    elif name in HF_TASKS:
        task = load_hf_task(name)
    else:
        raise ValueError(
            f"Unknown task '{name}'. Built-in tasks: {', '.join(BUILTIN_TASKS)}; paper tasks (need Hugging Face "
            f"datasets and a hub): {', '.join(HF_TASKS)}; or load your own with load_task_file(path)."
        )
    if n_test is not None and n_test != task.n_test:
        task = Task(**{**task.__dict__, "n_test": n_test})
    return task


def task_from_records(
    name: str,
    records: list[dict],
    input_fields: tuple[str, ...] | str = "input",
    label_field: str = "label",
    label_words: tuple[str, ...] | dict | None = None,
    input_prefix: str = "Input:",
    output_prefix: str = "\nOutput:",
    n_test: int = 100,
    max_examples: int | None = None,
) -> Task:
    """A :class:`Task` from dict records (the common path of HF datasets and local files).

    ``label_words``: a tuple indexed by integer class ids, a dict mapping raw labels to words,
    or None (labels used as written; the task is open if it has more than 10 distinct labels,
    else a classification over them).
    """
    fields = (input_fields,) if isinstance(input_fields, str) else tuple(input_fields)
    if not records:
        raise ValueError(f"Task '{name}' has no records.")
    missing = [f for f in (*fields, label_field) if f not in records[0]]
    if missing:
        raise ValueError(f"Task '{name}': records have no field(s) {missing}; fields present: {sorted(records[0])}.")
    if max_examples is not None:
        records = records[:max_examples]
    examples = []
    for r in records:
        raw = r[label_field]
        if isinstance(label_words, dict):
            label = label_words[raw] if raw in label_words else label_words.get(str(raw))
        elif label_words is not None:
            label = label_words[int(raw)] if 0 <= int(raw) < len(label_words) else None  # -1: unlabelled
        else:
            label = str(raw)
        if label is None:
            continue
        text = "\n".join(str(r[f]).strip() for f in fields)
        examples.append(Example(text, str(label)))
    words = tuple(label_words.values()) if isinstance(label_words, dict) else label_words
    if words is None:
        distinct = sorted({e.label for e in examples})
        words = tuple(distinct) if len(distinct) <= 10 else None
    words = None if words is None else tuple(dict.fromkeys(str(w) for w in words))
    return Task(name, tuple(examples), input_prefix, output_prefix, label_words=words,
                n_test=min(n_test, len(examples) - 1))


def load_hf_task(name: str, n_test: int = 100, max_examples: int = 2000) -> Task:
    """One of the paper's tasks (SST-2, SST-5, MR, Subj, AGNews, CB) through Hugging Face ``datasets``.

    Needs ``pip install datasets`` and a reachable hub (or its local cache); lmscope never downloads
    at run time on its own, so this is for people who have both.
    """
    if name not in HF_TASKS:
        raise ValueError(f"Unknown HF task '{name}'. Known: {', '.join(HF_TASKS)}.")
    try:
        import datasets
    except ImportError as err:
        raise ValueError(
            f"Task '{name}' loads through Hugging Face datasets, which is not installed: `pip install datasets` "
            "(and a hub connection or a local datasets cache). The built-in tasks need neither."
        ) from err
    path, config, split, fields, label_field, words, pre, post = HF_TASKS[name]
    ds = datasets.load_dataset(path, config, split=split)
    records = [dict(r) for r in ds.shuffle(seed=0).select(range(min(max_examples, len(ds))))]
    return task_from_records(name, records, fields, label_field, words, pre, post, n_test)


def load_task_file(
    path: str | Path,
    input_fields: tuple[str, ...] | str = "input",
    label_field: str = "label",
    label_words: tuple[str, ...] | dict | None = None,
    input_prefix: str = "Input:",
    output_prefix: str = "\nOutput:",
    n_test: int = 100,
    name: str | None = None,
) -> Task:
    """A task from a local ``.csv`` (header row) or ``.jsonl`` (one object a line) file."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"Task file '{path}' does not exist.")
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            records = list(csv.DictReader(f))
    elif path.suffix in (".jsonl", ".json"):
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        raise ValueError(f"Task file '{path}': use .csv (with a header) or .jsonl, not '{path.suffix}'.")
    return task_from_records(name or path.stem, records, input_fields, label_field, label_words,
                             input_prefix, output_prefix, n_test)


def option_logprobs(logits: torch.Tensor, prompt_len: int, options: list[list[int]]) -> torch.Tensor:
    """Mean log-probability of each option's tokens.

    ``logits`` (n_rows, T_keep, d_vocab) are the logits of positions ``prompt_len - 1`` onwards,
    one row per option (or a single row when every option is one token). Returns (n_options,).
    """
    logp = logits.float().log_softmax(-1)
    out = []
    for i, opt in enumerate(options):
        row = logp[i if logp.shape[0] > 1 else 0]
        out.append(torch.stack([row[j, t] for j, t in enumerate(opt)]).mean())
    return torch.stack(out)
