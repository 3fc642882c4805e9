"""Experiment: does fine-tuning the sentence encoder on a company's own content rank answer sentences better?

Fine-tunes all-MiniLM-L6-v2 (in-batch negatives, as sentence-transformers' MultipleNegativesRankingLoss, in plain
torch) on (question, sentence) pairs the product makes itself, and compares it with the shipped encoder on questions
it never saw. Nothing of bot/ changes: each encoder is loaded as the app loads one (`SentenceEncoder(path)`).

Training pairs, from the product's own material only (never from the question files below):
  heading   a question heading, customer-worded, with each sentence of its passage (finetune/selection.py)
  section   an article's title and section heading with each sentence of the section
  sentence  questions made from a sentence's own rarest words in a customer's frame (finetune/selection.py)
  seed      a seed conversation's customer message with the article sentence the agent's reply states
  example   an intent example with the best sentence of its intent's articles by the shipped ranking (a guess)
The second company (tests/bench/imported_help/first) has articles only, so only `heading`, `section` and `sentence`.

Measured, per company, encoder (base, tuned) and candidate set:
  all        every sentence of the company's articles, ranked by the cosine alone and by `rank_sentences` (cosine plus
             the word overlap and answer-type bonus), as "title: sentence", the way the index embeds sentences;
  retrieved  the sentences of the 3 passages `KnowledgeIndex.search` finds (built with that encoder), by the cosine
             alone and by `rank_candidates` (the live ranking, the passage's retrieval score included).
  MRR, top-1 and top-3 of the first sentence matching one of an item's `must` patterns (an item no sentence of the
  articles matches is left out); a paired bootstrap 95 % interval of the MRR difference (tuned - base); the AUC of
  the best cosine between answerable items and `uncovered` ones; the encoder's milliseconds per query and per
  sentence. Questions: dev_paraphrase.yaml and dev_multiturn.yaml (a follow-up searched as the dialogue searches it:
  `retrieval_query` over the customer turns, then `expanded_query`) for the demo pack; the `imported` split of
  grounded_questions.yaml (first stage) for the second company.

Usage (10 to 15 minutes on the 2-core development machine; models are written under --out, not into the repository):
  nice -n 15 .venv/bin/python tests/bench/bench_encoder_tuning.py [--out /tmp/enc-exp] [--epochs 2] [--json FILE]
  --reuse: evaluate models an earlier run left under --out instead of training them again.
"""

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bot.articles import Article, read_articles  # noqa: E402
from bot.context import Turn, retrieval_query  # noqa: E402
from bot.domain import DomainPack, default_pack_path, load_pack  # noqa: E402
from bot.grounding import rank_sentences  # noqa: E402
from bot.intents import encoder_path  # noqa: E402
from bot.knowledge import KnowledgeIndex, SentenceEncoder  # noqa: E402
from bot.places import expanded_query  # noqa: E402
from bot.selection import rank_candidates  # noqa: E402
from bot.text import split_sentences  # noqa: E402
from finetune.selection import Material, SelectorRecipe, asked_questions, pack_material  # noqa: E402

HERE = ROOT / "tests" / "bench"
DEMO_QUESTIONS = [HERE / "dev_paraphrase.yaml", HERE / "dev_multiturn.yaml"]
GROUNDED = HERE / "grounded_questions.yaml"
IMPORTED = HERE / "imported_help" / "first"
BOOTSTRAP = 2000
PER_POSITIVE = 24  # questions kept per sentence at most
TRAIN_MAX_LENGTH = 96  # a question or a "title: sentence" fits; longer ones are rare and cut


@dataclass(frozen=True)
class Item:
    """A question as the dialogue would search it, with what a right sentence matches."""

    query: str
    kind: str  # answer or uncovered
    must: tuple[str, ...]


# --- Training pairs --------------------------------------------------------------------------------


def sentence_titles(index: KnowledgeIndex) -> dict[str, str]:
    """Each sentence of the index with the title of the first article that holds it."""
    titles: dict[str, str] = {}
    for passage in index.passages:
        for sentence in split_sentences(passage.text):
            titles.setdefault(sentence, passage.title)
    return titles


def training_pairs(
    index: KnowledgeIndex, pack: DomainPack | None = None, *, per_sentence: int = 4, cap: int = PER_POSITIVE
) -> list[tuple[str, str, str]]:
    """(question, "title: sentence", source) from the articles in `index` and, given a pack, its conversations and
    intent examples; at most `cap` questions for one sentence (counted over all sources), so that the few sentences
    most conversations restate do not fill the epochs."""
    material = pack_material(pack) if pack is not None else None
    titles = sentence_titles(index)
    pairs = []
    recipe = SelectorRecipe(questions_per_sentence=per_sentence)
    for asked in asked_questions(index, material or Material(), recipe):
        if asked.source in ("heading", "sentence", "seed"):
            pairs += [(asked.question, f"{titles[s]}: {s}", asked.source) for s in sorted(asked.answers) if s in titles]
    for passage in index.passages:
        topic = f"{passage.title} {passage.heading}".strip() if passage.heading != passage.title else passage.title
        pairs += [(topic.lower(), f"{passage.title}: {s}", "section") for s in split_sentences(passage.text)]
    if material is not None:
        pairs += example_pairs(index, material.examples, titles)
    rng = random.Random(0)
    rng.shuffle(pairs)
    seen: Counter[str] = Counter()
    kept = []
    for pair in pairs:
        seen[pair[1]] += 1
        if seen[pair[1]] <= cap:
            kept.append(pair)
    return kept


def example_pairs(
    index: KnowledgeIndex, examples: Sequence[tuple[str, frozenset[str]]], titles: dict[str, str]
) -> list[tuple[str, str, str]]:
    """Each intent example with the sentence of its intent's articles that the shipped ranking puts first: which
    sentence answers it is not known, only the articles."""
    pairs = []
    for text, slugs in examples:
        passages = [p for p in index.passages if p.article_slug in slugs]
        if not passages:
            continue
        cosine = index.sentence_similarity(text, passages)
        ranked = rank_sentences(
            text, [p.text for p in passages], similarity=lambda _, ss, cosine=cosine: [cosine.get(s, 0.0) for s in ss]
        )
        if ranked:
            pairs.append((text, f"{titles[ranked[0].sentence]}: {ranked[0].sentence}", "example"))
    return pairs


def batches(pairs: Sequence[tuple[str, str, str]], size: int, rng: random.Random) -> list[list[tuple[str, str]]]:
    """Shuffled batches in which no question and no sentence comes twice: an in-batch negative is never a positive."""
    pending = list(pairs)
    rng.shuffle(pending)
    out = []
    while pending:
        batch, questions, sentences, rest = [], set(), set(), []
        for question, sentence, _ in pending:
            if len(batch) < size and question not in questions and sentence not in sentences:
                batch.append((question, sentence))
                questions.add(question)
                sentences.add(sentence)
            else:
                rest.append((question, sentence, ""))
        out.append(batch)
        pending = rest
    return [batch for batch in out if len(batch) > 1]


def train(
    pairs: Sequence[tuple[str, str, str]], folder: Path, *, epochs: int, batch_size: int, lr: float, seed: int = 0
) -> float:
    """Fine-tune the shipped encoder on `pairs` (in-batch negatives, cosine times 20, cross-entropy) and save it with
    its tokenizer in `folder`; returns the seconds it took."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    from bot.intent_net import IntentNet

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(encoder_path())
    net = IntentNet(AutoModel.from_pretrained(encoder_path()), num_labels=1)  # the served forward, with dropout
    net.train()
    rng = random.Random(seed)
    plan = [batches(pairs, batch_size, rng) for _ in range(epochs)]
    steps = sum(len(epoch) for epoch in plan)
    optimiser = torch.optim.AdamW(net.encoder.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min(1.0, (step + 1) / warmup) * max(0.0, (steps - step) / max(1, steps - warmup))
    )

    def embed(texts: list[str]) -> torch.Tensor:
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=TRAIN_MAX_LENGTH, return_tensors="pt")
        return F.normalize(net.embed(encoded["input_ids"], encoded["attention_mask"]), dim=-1)

    started, step = time.perf_counter(), 0
    for epoch in plan:
        for batch in epoch:
            questions, sentences = embed([q for q, _ in batch]), embed([s for _, s in batch])
            loss = F.cross_entropy(20.0 * questions @ sentences.T, torch.arange(len(batch)))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            if step % 10 == 0 or step == steps:
                print(f"  step {step}/{steps} loss {loss.item():.3f} {time.perf_counter() - started:.0f} s", flush=True)
    seconds = time.perf_counter() - started
    folder.mkdir(parents=True, exist_ok=True)
    net.encoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return seconds


# --- Questions ---------------------------------------------------------------------------------------


def earlier_messages(item: dict) -> list[str]:
    before = item.get("before") or []
    return [before] if isinstance(before, str) else list(before)


def read_items(files: Sequence[Path], known: str, split: str | None = None) -> list[Item]:
    """The `answer` and `uncovered` items of `files` (of one `split`, first stage only, when given), each with the
    query the dialogue would search for it."""
    items = []
    for file in files:
        for raw in yaml.safe_load(file.read_text()):
            kind = raw.get("kind", "answer")
            if kind not in ("answer", "uncovered") or (
                split and (raw.get("split", "dev"), raw.get("stage")) != (split, None)
            ):
                continue
            turns = [Turn("customer", text) for text in [*earlier_messages(raw), raw["q"]]]
            items.append(Item(expanded_query(retrieval_query(turns), known), kind, tuple(raw.get("must") or ())))
    return items


def is_right(sentence: str, must: Sequence[str]) -> bool:
    return any(re.search(pattern, sentence, re.IGNORECASE) for pattern in must)


# --- Measuring ---------------------------------------------------------------------------------------


def reciprocal_rank(ranked: Sequence[str], must: Sequence[str]) -> float:
    for place, sentence in enumerate(ranked, 1):
        if is_right(sentence, must):
            return 1.0 / place
    return 0.0


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Chance that an answerable item's best cosine is above an uncovered one's (ties count half)."""
    if not positives or not negatives:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def measure(index: KnowledgeIndex, items: Sequence[Item]) -> dict[str, dict[str, list[float]]]:
    """Per ranking, each answerable item's reciprocal rank (`rr`) and every item's best cosine (`best`)."""
    passages = index.passages
    texts = [p.text for p in passages]
    found: dict[str, dict[str, list[float]]] = {}
    for item in items:
        cosine_all = index.sentence_similarity(item.query, passages)
        hits = index.search(item.query, k=3)
        cosine_hit = index.sentence_similarity(item.query, [hit.passage for hit in hits])
        rankings = {
            "all/cosine": sorted(cosine_all, key=lambda s: -cosine_all[s]),
            "all/cosine+words": [
                c.sentence
                for c in rank_sentences(
                    item.query, texts, similarity=lambda _, ss, known=cosine_all: [known.get(s, 0.0) for s in ss]
                )
            ],
            "retrieved/cosine": sorted(cosine_hit, key=lambda s: -cosine_hit[s]),
            "retrieved/live": [c.sentence for c in rank_candidates(index, item.query, hits)],
        }
        best = {"all/cosine": max(cosine_all.values()), "retrieved/cosine": max(cosine_hit.values(), default=0.0)}
        for name, ranked in rankings.items():
            row = found.setdefault(name, {"rr": [], "best": [], "best_uncovered": []})
            if item.kind == "answer":
                row["rr"].append(reciprocal_rank(ranked, item.must))
                row["best"].append(best.get(name, float("nan")))
            else:
                row["best_uncovered"].append(best.get(name, float("nan")))
    return found


def answerable(items: Sequence[Item], index: KnowledgeIndex) -> list[Item]:
    """The uncovered items, and the answer items that some sentence of the articles matches."""
    sentences = list(sentence_titles(index))
    return [i for i in items if i.kind == "uncovered" or any(is_right(s, i.must) for s in sentences)]


def summary(rr: Sequence[float]) -> dict[str, float]:
    values = np.array(rr)
    return {
        "mrr": float(values.mean()),
        "top1": float((values == 1.0).mean()),
        "top3": float((values >= 1 / 3).mean()),
    }


def bootstrap(base: Sequence[float], tuned: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """The MRR difference (tuned - base) with a paired bootstrap 95 % interval."""
    difference = np.array(tuned) - np.array(base)
    rng = np.random.default_rng(seed)
    means = difference[rng.integers(0, len(difference), (BOOTSTRAP, len(difference)))].mean(axis=1)
    return float(difference.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def timing(encoder: SentenceEncoder, queries: Sequence[str], sentences: Sequence[str]) -> dict[str, float]:
    """Milliseconds per query (one at a time, one thread, as a turn embeds it) and per sentence (batches of 64), the
    fastest of three passes: the development machine is shared, and the slower passes measure the neighbours."""
    encoder.embed(list(queries[:3]))
    per_query, per_sentence = [], []
    for _ in range(3):
        started = time.perf_counter()
        for query in queries:
            encoder.embed([query])
        per_query.append((time.perf_counter() - started) * 1000 / len(queries))
        started = time.perf_counter()
        for begin in range(0, len(sentences), 64):
            encoder.embed(list(sentences[begin : begin + 64]))
        per_sentence.append((time.perf_counter() - started) * 1000 / len(sentences))
    return {"ms_per_query": min(per_query), "ms_per_sentence": min(per_sentence)}


def measured(articles: Sequence[Article], items: Sequence[Item], path: Path | None) -> dict:
    """`measure` and `timing` for one encoder (the shipped one when `path` is None) over an index of `articles`."""
    encoder = SentenceEncoder(path)
    index = KnowledgeIndex.build(articles, encoder)
    kept = answerable(items, index)
    return measure(index, kept) | {"_timing": timing(encoder, [i.query for i in kept], index.sentence_texts())}


def compare(name: str, items: Sequence[Item], base: dict, tuned: dict) -> dict:
    """Base against tuned on one question set: the summaries, the MRR difference with its interval, the AUC."""
    report = {"name": name, "answer_items": sum(i.kind == "answer" for i in items),
              "uncovered_items": sum(i.kind == "uncovered" for i in items), "rankings": {}}  # fmt: skip
    for ranking in (r for r in base if not r.startswith("_")):
        b, t = base[ranking], tuned[ranking]
        row = {"base": summary(b["rr"]), "tuned": summary(t["rr"])}
        row["mrr_diff"], row["ci_low"], row["ci_high"] = bootstrap(b["rr"], t["rr"])
        if ranking.endswith("/cosine"):
            row["auc_base"] = auc(b["best"], b["best_uncovered"])
            row["auc_tuned"] = auc(t["best"], t["best_uncovered"])
            # The cosine's scale moves with tuning: thresholds set on the shipped encoder would need measuring again.
            row["median_best"] = {
                who: {"answer": float(np.median(r["best"])), "uncovered": float(np.median(r["best_uncovered"]))}
                for who, r in (("base", b), ("tuned", t))
                if r["best_uncovered"]
            }
        report["rankings"][ranking] = row
    report["timing"] = {"base": base["_timing"], "tuned": tuned["_timing"]}
    return report


def show(report: dict) -> None:
    print(f"\n{report['name']}: {report['answer_items']} answer items, {report['uncovered_items']} uncovered")
    print(f"{'ranking':<20} {'MRR base':>8} {'tuned':>6} {'diff [95 % CI]':>24} {'top1 b/t':>11} {'top3 b/t':>11}"
          f" {'AUC b/t':>11}")  # fmt: skip
    for name, row in report["rankings"].items():
        b, t = row["base"], row["tuned"]
        interval = f"{row['mrr_diff']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
        auc_text = f"{row['auc_base']:.2f}/{row['auc_tuned']:.2f}" if "auc_base" in row else ""
        print(f"{name:<20} {b['mrr']:>8.3f} {t['mrr']:>6.3f} {interval:>24} {b['top1']:>5.2f}/{t['top1']:.2f}"
              f" {b['top3']:>5.2f}/{t['top3']:.2f} {auc_text:>11}")  # fmt: skip
    for name, row in report["rankings"].items():
        for who, median in row.get("median_best", {}).items():
            print(f"  {name} {who}: median best cosine {median['answer']:.2f} answerable, "
                  f"{median['uncovered']:.2f} uncovered")  # fmt: skip
    for name, cost in report["timing"].items():
        print(f"  {name}: {cost['ms_per_query']:.1f} ms per query, {cost['ms_per_sentence']:.2f} ms per sentence")


ARTICLE_SOURCES = ("heading", "section", "sentence")
# Each tuned encoder: the company whose material it learns from, the sources of its pairs, and the question sets it
# is measured on (a company's own, and another's to see what tuning on one company does to a second one).
VARIANTS = {
    "demo": ("demo", (*ARTICLE_SOURCES, "seed", "example"), ("demo-informal", "demo-formal", "imported")),
    "demo-articles": ("demo", ARTICLE_SOURCES, ("demo-informal", "demo-formal")),
    "imported": ("imported", ARTICLE_SOURCES, ("imported",)),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/enc-exp"), help="where the tuned encoders are saved")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--per-sentence", type=int, default=4, help="questions made from each article sentence")
    parser.add_argument("--seed", type=int, default=0, help="of the batches and the model's initial dropout")
    parser.add_argument("--reuse", action="store_true", help="evaluate the encoders an earlier run saved")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    pack = load_pack(default_pack_path())
    articles = {"demo": list(pack.articles), "imported": [article for _, article in read_articles([IMPORTED])]}
    packs = {"demo": pack, "imported": None}
    base_index = {company: KnowledgeIndex.build(found, SentenceEncoder()) for company, found in articles.items()}
    # (company, question files, split): demo-formal is grounded_questions.yaml's development split, the articles'
    # own wording, to see that tuning for customers' wording does not cost the plain questions.
    sets = {
        "demo-informal": ("demo", DEMO_QUESTIONS, None),
        "demo-formal": ("demo", [GROUNDED], "dev"),
        "imported": ("imported", [GROUNDED], "imported"),
    }
    items = {name: read_items(files, base_index[company].text, split) for name, (company, files, split) in sets.items()}
    base: dict[str, dict] = {}
    reports = []
    for variant in args.variants:
        company, sources, measured_on = VARIANTS[variant]
        folder = args.out / f"{variant}-seed{args.seed}"
        meta: dict = {"variant": variant, "seed": args.seed, "sources": sources}
        if not args.reuse:
            started = time.perf_counter()
            pairs = training_pairs(base_index[company], packs[company], per_sentence=args.per_sentence)
            pairs = [pair for pair in pairs if pair[2] in sources]
            meta["pairs"], meta["by_source"] = len(pairs), dict(Counter(source for _, _, source in pairs))
            meta["pairs_seconds"] = time.perf_counter() - started
            print(f"{variant}: {len(pairs)} pairs {meta['by_source']}", flush=True)
            meta["train_seconds"] = train(
                pairs, folder, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed
            )
            print(f"{variant}: trained in {meta['train_seconds']:.0f} s", flush=True)
        for name in measured_on:
            on = sets[name][0]
            kept = answerable(items[name], base_index[on])
            if name not in base:
                base[name] = measured(articles[on], kept, None)
            report = compare(
                f"{variant} (seed {args.seed}) on {name}", kept, base[name], measured(articles[on], kept, folder)
            )
            show(report)
            reports.append(report | {"training": meta, "questions": name, "left_out": len(items[name]) - len(kept)})
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
