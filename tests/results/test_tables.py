"""pipeline.results.tables: the headline and summary tables show seeds, updates and cost per run,
the normalisation's λ, and end with the verdict; numbers as mean ± std."""

from __future__ import annotations

from pipeline.results.tables import (fmt_mean_std, headline_markdown, markdown_to_html, scoring_rank,
                                     summary_markdown, write_markdown)
from tests.results.test_verdicts import tested  # noqa: F401  (the grid with known effects)


def test_headline_shows_seeds_updates_and_ends_with_the_verdict(tested):
    frame, _, sig = tested
    text = headline_markdown(frame.assign(**{"lambda": frame["lambda"].astype(float)}), sig, "zeroshot", 0.25)
    lines = text.strip().splitlines()
    assert lines[-1].startswith("Verdict (") and "dpr-8" in lines[-1]
    header = next(line for line in lines if line.startswith("| run |"))
    assert header.startswith("| run | seeds | updates | N_total | memory |")
    row = next(line for line in lines if line.startswith("| contaccum-8x4 |"))
    assert row.startswith("| contaccum-8x4 | 2 | 3 | 32 | 64 |")
    assert next(line for line in lines if line.startswith("| zeroshot |")).startswith("| zeroshot | 2 | – | – | – |")
    summary = summary_markdown(frame.assign(**{"lambda": frame["lambda"].astype(float)}), sig, "zeroshot")
    assert "| seeds | updates |" in summary and "Verdict (" in summary and "dn λ=0.25" in summary


def test_cells_html_and_the_written_pair(tmp_path):
    assert fmt_mean_std(0.51234, 0.0123) == "0.5123 ± 0.0123" and fmt_mean_std(0.5, float("nan")) == "0.5000"
    assert fmt_mean_std(float("nan"), 0.1) == "–"
    assert scoring_rank("dot") < scoring_rank("dn") < scoring_rank("nnn[k=4]") < scoring_rank("nnn[k=16]")
    html = markdown_to_html("## Title <x>\n\n| a | b |\n|---|--:|\n| 1 | 2 |\n\nVerdict: none")
    assert "<h2>Title &lt;x&gt;</h2>" in html and "<th>a</th><th>b</th>" in html
    assert "<tr><td>1</td><td>2</td></tr>" in html and "<p>Verdict: none</p>" in html and "---" not in html
    write_markdown(tmp_path / "t.md", "| a |\n|---|\n| 1 |\n")
    assert (tmp_path / "t.md").read_text() == "| a |\n|---|\n| 1 |\n" and "<td>1</td>" in (tmp_path / "t.html").read_text()
