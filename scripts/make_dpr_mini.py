"""Build data/embedded/dpr-mini: a small synthetic dataset in DPR's and Tevatron's file formats.

Everything is generated from the facts below (no external data), deterministically:

  psgs.tsv                 id<TAB>text<TAB>title with a header line, like DPR's psgs_w100.tsv
  train.json               DPR training JSON: question, answers, positive_ctxs, negative_ctxs,
                           hard_negative_ctxs (2 positives are not in psgs.tsv; 1 question has none)
  test.qa.csv              DPR QA file: question<TAB>["answer", ...] with string answers
  curatedtrec-test.qa.csv  the same with regular-expression answers, as CuratedTREC
  tevatron-train.jsonl     Tevatron training JSONL: query_id, query, positive/negative_passages

    python scripts/make_dpr_mini.py            # rewrite the folder
    python scripts/make_dpr_mini.py --check    # exit 1 if the committed files differ
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.sources.answer_matching import has_answer  # noqa: E402

OUT = ROOT / "data" / "embedded" / "dpr-mini"

# (title, test question, train question, answers, sentence that holds the answer)
# The answers exercise unicode (precomposed and decomposed), case, punctuation and multi-token spans.
FACTS = [
    ("ETH", "in which city is the eth university", "where is eth located", ["Zürich"],
     "The ETH is a public research university in Zu\u0308rich, Switzerland, founded in 1855."),
    ("Brazil", "what is the largest city of brazil", "largest city in brazil", ["São Paulo"],
     "The largest city of Brazil is SÃO PAULO, followed by Rio de Janeiro."),
    ("Highway to Hell", "which band recorded highway to hell", "who recorded highway to hell", ["AC/DC"],
     "Highway to Hell is a 1979 album by the Australian band ac / dc."),
    ("Pi", "what is pi rounded to two decimals", "value of pi to two decimal places", ["3.14"],
     "Pi rounded to two decimals is 3.14."),
    ("Rock and roll", "which genre did elvis presley popularise", "what music did elvis make famous",
     ["rock'n'roll"], "Elvis Presley popularised Rock'n'Roll in the 1950s."),
    ("Apollo 11", "who was the first person on the moon", "first man to walk on the moon", ["Neil Armstrong"],
     "On 20 July 1969 Neil Armstrong became the first person to walk on the Moon."),
    ("Mount Everest", "what is the highest mountain on earth", "highest mountain in the world",
     ["Mount Everest", "Everest"], "Mount Everest, at 8,849 metres, is the highest mountain above sea level."),
    ("Marie Curie", "who discovered polonium", "discoverer of polonium", ["Marie Curie"],
     "Polonium was discovered in 1898 by Marie Curie and Pierre Curie."),
    ("Ångström", "which unit equals one ten-billionth of a metre", "unit of length of 0.1 nanometres",
     ["ångström"], "One Ångström equals one ten-billionth of a metre."),
    ("United States Navy", "which navy operates the uss nimitz", "who operates uss nimitz", ["U.S. Navy"],
     "The USS Nimitz is an aircraft carrier of the U.S. Navy."),
    ("Île-de-France", "which region contains paris", "region around paris", ["Île-de-France"],
     "Paris lies in the region of ÎLE-DE-FRANCE in northern France."),
    ("Dvořák", "who composed the new world symphony", "composer of from the new world", ["Antonín Dvořák"],
     "The New World Symphony was composed by Antonín Dvořák in 1893."),
    ("Python", "who created the python programming language", "creator of python",
     ["Guido van Rossum"], "Python was created by Guido van Rossum and first released in 1991."),
    ("Water", "what is the chemical formula of water", "formula for water", ["H2O"],
     "The chemical formula of water is H2O: two hydrogen atoms and one oxygen atom."),
    ("Tokyo", "what is the capital of japan", "capital city of japan", ["Tokyo"],
     "Tokyo has been the capital of Japan since 1868."),
    ("Nile", "what is the longest river in africa", "longest african river", ["Nile", "River Nile"],
     "The Nile is the longest river in Africa, flowing north into the Mediterranean Sea."),
    ("Beethoven", "who composed the moonlight sonata", "composer of moonlight sonata", ["Ludwig van Beethoven"],
     "The Moonlight Sonata is a piano sonata by Ludwig van Beethoven, completed in 1801."),
    ("Gold", "what is the chemical symbol of gold", "symbol for gold", ["Au"],
     "Gold is a chemical element with the symbol Au and atomic number 79."),
    ("Canberra", "what is the capital of australia", "australian capital city", ["Canberra"],
     "Canberra, not Sydney, is the capital city of Australia."),
    ("Shakespeare", "who wrote hamlet", "author of hamlet", ["William Shakespeare", "Shakespeare"],
     "Hamlet is a tragedy written by William Shakespeare around 1600."),
    ("Speed of light", "how fast does light travel in vacuum", "speed of light in km per second",
     ["299,792 km/s"], "Light travels in a vacuum at about 299,792 km/s."),
    ("Mona Lisa", "who painted the mona lisa", "painter of mona lisa", ["Leonardo da Vinci"],
     "The Mona Lisa was painted by Leonardo da Vinci in the early sixteenth century."),
    ("Penicillin", "who discovered penicillin", "discoverer of penicillin", ["Alexander Fleming"],
     "Penicillin was discovered in 1928 by the Scottish scientist Alexander Fleming."),
    ("Pacific Ocean", "what is the largest ocean", "biggest ocean on earth", ["Pacific Ocean", "Pacific"],
     "The Pacific Ocean is the largest and deepest of the world's oceans."),
    ("Jupiter", "what is the largest planet of the solar system", "biggest planet", ["Jupiter"],
     "Jupiter is the fifth planet from the Sun and the largest in the Solar System."),
    ("Berlin Wall", "in which year did the berlin wall fall", "year the berlin wall came down", ["1989"],
     "The Berlin Wall fell on 9 November 1989."),
    ("Kraków", "which polish city was the royal capital until 1596", "old royal capital of poland",
     ["Kraków"], "Until 1596 the royal capital of Poland was KRAKÓW on the Vistula."),
    ("Telephone", "who is credited with inventing the telephone", "inventor of the telephone",
     ["Alexander Graham Bell"], "Alexander Graham Bell was granted the first US patent for the telephone in 1876."),
    ("Sahara", "what is the largest hot desert", "largest hot desert in the world", ["Sahara"],
     "The Sahara is the largest hot desert, covering much of North Africa."),
    ("DNA", "who proposed the double helix model of dna", "double helix discoverers",
     ["Watson and Crick"], "The double helix model of DNA was proposed by Watson and Crick in 1953."),
    ("Café", "which drink is served in a café au lait", "main drink of cafe au lait", ["coffee"],
     "A café au lait is coffee served with hot milk."),
    ("Naïve Bayes", "which theorem does naïve bayes apply", "theorem behind naive bayes", ["Bayes' theorem"],
     "Naïve Bayes classifiers apply Bayes' theorem with strong independence assumptions."),
    ("C++", "which language did bjarne stroustrup design", "language designed by stroustrup", ["C++"],
     "Bjarne Stroustrup designed C++ as an extension of the C language."),
    ("Everest expedition", "in which year was everest first climbed", "first ascent of everest year", ["1953"],
     "Edmund Hillary and Tenzing Norgay first reached the summit in 1953."),
    ("Euro", "what is the currency of germany", "german currency", ["euro"],
     "Germany has used the Euro as its currency since 2002."),
    ("Amazon", "which river carries the most water", "river with the largest discharge", ["Amazon"],
     "The Amazon carries more water than any other river in the world."),
    ("Moon", "what is the natural satellite of the earth called", "earth's natural satellite", ["the Moon"],
     "The Earth has one natural satellite, the Moon."),
    ("Oxygen", "which element has atomic number 8", "element number 8", ["oxygen"],
     "Oxygen is the chemical element with atomic number 8."),
    ("Everest height", "how high is mount everest in metres", "height of everest", ["8,849 metres"],
     "The summit of the mountain stands 8,849 metres above sea level."),
    ("Kilimanjaro", "what is the highest mountain in africa", "tallest african mountain", ["Kilimanjaro"],
     "Kilimanjaro in Tanzania is the highest mountain in Africa."),
]

# CuratedTREC-style: the answers are regular expressions, searched in the passage text.
REGEX_QUESTIONS = [
    ("who first walked on the moon", ["(Neil )?Armstrong"]),
    ("when did the berlin wall fall", ["19[0-9]{2}"]),
    ("who discovered polonium", ["(Marie )?Curie"]),
    ("what is the highest mountain", ["(Mount )?Everest"]),
    ("who wrote hamlet", ["(William )?Shakespeare"]),
    ("who painted the mona lisa", ["Leonardo( da Vinci)?|da Vinci"]),
    ("what is the capital of japan", ["^tokyo\\b"]),
    ("which city is the eth in", ["z\u00fcrich"]),
    ("who invented the telephone", ["(Alexander )?(Graham )?Bell"]),
    ("what is the chemical symbol of gold", ["\\bAu\\b"]),
]

FILLER_TOPICS = ["history", "geography", "economy", "culture", "climate", "architecture", "transport",
                 "education", "sport", "literature"]


def distractors(title: str, rng: random.Random) -> list[str]:
    topics = rng.sample(FILLER_TOPICS, 4)
    # The title is only in the title field: DPR's matcher reads the text, and many answers are titles.
    return [f"This passage covers {t} in relation to its subject. Scholars have written at length on the "
            f"{t} involved, and several museums hold collections on it." for t in topics]


def build() -> dict[str, str]:
    rng = random.Random(20240613)
    passages: list[tuple[str, str, str]] = []      # (id, text, title)
    gold: list[str] = []
    by_title: list[list[str]] = []
    for title, _tq, _trq, answers, sentence in FACTS:
        pid = str(len(passages) + 1)
        passages.append((pid, sentence, title))
        gold.append(pid)
        ids = []
        for text in distractors(title, rng):
            assert not has_answer(answers, text), (title, text)
            ids.append(str(len(passages) + 1))
            passages.append((ids[-1], text, title))
        by_title.append(ids)
    # Filler passages on no particular fact, so the corpus has a few hundred entries.
    while len(passages) < 300:
        t = rng.choice(FILLER_TOPICS)
        n = len(passages) + 1
        passages.append((str(n), f"Passage {n} is general background on {t}, with no specific facts "
                                  f"about any person, place or date.", f"Background {n}"))
    text_of = {pid: (title, text) for pid, text, title in passages}
    for (title, _tq, _trq, answers, _s), ids in zip(FACTS, by_title):
        for pid in ids:
            assert not has_answer(answers, text_of[pid][1])
    # The answer of every fact must occur only where intended among the fact passages.
    for i, (_title, _tq, _trq, answers, _s) in enumerate(FACTS):
        assert has_answer(answers, text_of[gold[i]][1]), FACTS[i]

    def ctx(pid: str) -> dict:
        title, text = text_of[pid]
        return {"title": title, "text": text, "score": 1.0, "title_score": 0, "passage_id": pid}

    train = []
    all_ids = [p[0] for p in passages]
    for i, (title, _tq, trq, answers, _s) in enumerate(FACTS[:32]):
        negatives = [p for p in rng.sample(all_ids, 3) if p != gold[i]][:2]
        train.append({"dataset": "dpr-mini", "question": trq, "answers": answers,
                      "positive_ctxs": [ctx(gold[i])], "negative_ctxs": [ctx(p) for p in negatives],
                      "hard_negative_ctxs": [ctx(p) for p in by_title[i][:3]]})
    # Two positives that psgs.tsv lacks (the converter adds them from here), one with the old
    # "psg_id" key; a second positive on one question; and a question without any positive, which
    # DPR's loader skips.
    train[0]["positive_ctxs"].append({"title": "ETH", "text": "ETH Zürich is a university of science and "
                                      "technology.", "passage_id": "9001"})
    train[1]["positive_ctxs"].insert(0, {"title": "Brazil", "text": "São Paulo is the most populous city of "
                                         "Brazil.", "psg_id": 9002})
    train.append({"dataset": "dpr-mini", "question": "a question without any gold passage", "answers": ["none"],
                  "positive_ctxs": [], "negative_ctxs": [ctx("1")], "hard_negative_ctxs": []})

    tsv = "id\ttext\ttitle\n" + "".join(f"{pid}\t{text}\t{title}\n" for pid, text, title in passages)
    qa = "".join(f"{tq}\t{json.dumps(answers, ensure_ascii=False)}\n" for _t, tq, _trq, answers, _s in FACTS)
    trec = "".join(f"{q}\t{json.dumps(a, ensure_ascii=False)}\n" for q, a in REGEX_QUESTIONS)
    tev = []
    for i, (title, _tq, trq, _answers, _s) in enumerate(FACTS[:20]):
        tev.append({"query_id": f"tev-{i}", "query": trq,
                    "positive_passages": [{"docid": gold[i], "title": title, "text": text_of[gold[i]][1]}],
                    "negative_passages": [{"docid": p, "title": text_of[p][0], "text": text_of[p][1]}
                                          for p in by_title[i][:2]]})
    return {
        "psgs.tsv": tsv,
        "train.json": json.dumps(train, indent=2, ensure_ascii=False) + "\n",
        "test.qa.csv": qa,
        "curatedtrec-test.qa.csv": trec,
        "tevatron-train.jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in tev),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = p.parse_args()
    files = build()
    if args.check:
        bad = [n for n, text in files.items() if not (OUT / n).is_file() or (OUT / n).read_text("utf-8") != text]
        if bad:
            print(f"differs from the generator: {bad}", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_bytes(text.encode("utf-8"))
    print(f"wrote {', '.join(files)} to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
