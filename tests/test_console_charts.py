"""The console's server-side SVG charts: well-formed, CSP-safe, escaped, and drawing what they are given."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from voiceassist.admin.console.charts import PALETTE, bar_chart, line_chart, nice_ticks

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert(1)</script>"&\''


def parse(markup: str) -> ET.Element:
    root = ET.fromstring(markup)  # raises on anything that is not well-formed XML
    assert root.tag == f"{SVG}svg"
    return root


def find_all(root: ET.Element, tag: str) -> list[ET.Element]:
    return list(root.iter(f"{SVG}{tag}"))


def series_group(root: ET.Element, name: str) -> ET.Element:
    groups = [g for g in find_all(root, "g") if g.get("class") == "series" and g.get("data-series") == name]
    assert len(groups) == 1, f"expected one group for series {name!r}"
    return groups[0]


def title_of(element: ET.Element) -> str | None:
    title = element.find(f"{SVG}title")
    assert title is not None, f"{element.tag} has no <title>"
    return title.text


def polyline_points(polyline: ET.Element) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (pair.split(",") for pair in polyline.get("points", "").split())]


def assert_csp_safe(markup: str) -> None:
    lowered = markup.lower()
    assert "style=" not in lowered
    assert "<script" not in lowered
    assert "<style" not in lowered


def hourly(values: list[float | None]) -> list[tuple[str, float | None]]:
    return [(f"{hour:02d}:00", value) for hour, value in enumerate(values)]


# nice_ticks


def test_nice_ticks_covers_range_in_round_steps() -> None:
    assert nice_ticks(0, 873) == [0, 200, 400, 600, 800, 1000]


@pytest.mark.parametrize("low, high", [(0, 1), (0, 7), (0, 101), (0, 873), (0, 0.3), (0, 12_345), (-40, 260)])
def test_nice_ticks_are_evenly_spaced_1_2_5_steps_and_cover_the_range(low: float, high: float) -> None:
    ticks = nice_ticks(low, high)
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1
    step = steps.pop()
    assert any(math.isclose(step, m * 10.0**k) for m in (1, 2, 5) for k in range(-3, 6)), step
    assert ticks[0] <= low and ticks[-1] >= high
    assert 4 <= len(ticks) <= 6


def test_nice_ticks_of_a_flat_range_still_gives_an_axis() -> None:
    ticks = nice_ticks(0, 0)
    assert ticks[0] == 0 and ticks[-1] > 0 and len(ticks) >= 2


def test_nice_ticks_rejects_non_finite_range() -> None:
    with pytest.raises(ValueError):
        nice_ticks(0, float("inf"))


# line_chart


def test_line_chart_is_well_formed_svg_with_title_and_size() -> None:
    markup = line_chart({"p50": hourly([120, 130, 110])}, title="Latency", unit="ms", width=600, height=200)
    root = parse(markup)
    assert root.get("viewBox") == "0 0 600 200"
    assert root.get("width") == "600" and root.get("height") == "200"
    assert root.get("role") == "img" and root.get("aria-label") == "Latency"
    assert title_of(root) == "Latency"
    assert_csp_safe(markup)


def test_line_chart_polyline_has_one_point_per_value() -> None:
    root = parse(line_chart({"p95": hourly([300, 420, 380, 510, 460])}, title="t", unit="ms"))
    (polyline,) = find_all(series_group(root, "p95"), "polyline")
    assert len(polyline_points(polyline)) == 5
    assert polyline.get("fill") == "none" and polyline.get("stroke") == PALETTE[0]
    assert polyline.get("stroke-width") == "2"


def test_line_chart_gap_splits_the_line_in_two() -> None:
    root = parse(line_chart({"p50": hourly([100, 110, None, 130, 140, 150])}, title="t", unit="ms"))
    polylines = find_all(series_group(root, "p50"), "polyline")
    assert [len(polyline_points(p)) for p in polylines] == [2, 3]


def test_line_chart_lone_point_between_gaps_is_a_circle() -> None:
    root = parse(line_chart({"p50": hourly([100, 110, None, 130, None])}, title="t", unit="ms"))
    group = series_group(root, "p50")
    assert len(find_all(group, "polyline")) == 1
    assert len(find_all(group, "circle")) == 1


def test_line_chart_series_get_distinct_palette_colours_and_legend_entries() -> None:
    names = [f"stage {n}" for n in range(7)]
    root = parse(line_chart({name: hourly([n, n + 1]) for n, name in enumerate(names)}, title="t", unit="ms"))
    colours = [find_all(series_group(root, name), "polyline")[0].get("stroke") for name in names]
    assert colours[:6] == list(PALETTE[:6]) and len(set(colours)) >= 6
    legend = next(g for g in find_all(root, "g") if g.get("class") == "legend")
    assert [t.text for t in find_all(legend, "text")] == names


def test_line_chart_tick_labels_carry_the_unit_and_start_at_zero() -> None:
    root = parse(line_chart({"p50": hourly([250, 873])}, title="t", unit="ms"))
    y_axis = next(g for g in find_all(root, "g") if g.get("class") == "y-axis")
    assert [t.text for t in find_all(y_axis, "text")] == ["0 ms", "200 ms", "400 ms", "600 ms", "800 ms", "1000 ms"]
    assert len(find_all(y_axis, "line")) >= 6  # a gridline per tick


def test_line_chart_thins_48_x_labels_to_at_most_8() -> None:
    points = [(f"{n // 2:02d}:{30 * (n % 2):02d}", float(n)) for n in range(48)]
    root = parse(line_chart({"calls": points}, title="t", unit=""))
    x_axis = next(g for g in find_all(root, "g") if g.get("class") == "x-axis")
    shown = [t.text for t in find_all(x_axis, "text")]
    assert 2 <= len(shown) <= 8
    assert shown[0] == "00:00"


def test_line_chart_escapes_hostile_text_everywhere() -> None:
    markup = line_chart({HOSTILE: [(HOSTILE, 1.0), ("b", 2.0)]}, title=HOSTILE, unit=HOSTILE)
    assert "<script>" not in markup
    assert_csp_safe(markup)
    root = parse(markup)
    assert root.get("aria-label") == HOSTILE
    assert title_of(root) == HOSTILE
    series_group(root, HOSTILE)
    texts = {t.text for t in find_all(root, "text")}
    assert HOSTILE in texts  # the legend entry and the first x label, shown as written
    assert f"0 {HOSTILE}" in texts


@pytest.mark.parametrize("series", [{}, {"p50": hourly([None, None])}, {"a": [], "b": []}])
def test_line_chart_without_values_says_no_data(series: dict[str, list[tuple[str, float | None]]]) -> None:
    markup = line_chart(series, title="Latency", unit="ms", width=500, height=180)
    root = parse(markup)
    assert root.get("viewBox") == "0 0 500 180"
    assert "No data" in [t.text for t in find_all(root, "text")]
    assert not find_all(root, "polyline")
    assert_csp_safe(markup)


def test_line_chart_rejects_series_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="'b' has 2 points"):
        line_chart({"a": hourly([1, 2, 3]), "b": hourly([1, 2])}, title="t", unit="ms")


def test_line_chart_negative_values_stay_inside_the_plot() -> None:
    markup = line_chart({"delta": hourly([-120, 40, 300])}, title="t", unit="ms", height=260)
    (polyline,) = find_all(series_group(parse(markup), "delta"), "polyline")
    assert all(0 <= y <= 260 for _, y in polyline_points(polyline))
    assert ">-200 ms<" in markup  # the axis reaches below the lowest value


def test_chart_numbers_have_at_most_one_decimal() -> None:
    root = parse(line_chart({"p50": hourly([1 / 3, 2 / 3, 1.0, 0.1234])}, title="t", unit="s", width=701))
    (polyline,) = find_all(root, "polyline")
    for pair in polyline.get("points", "").split():
        for number in pair.split(","):
            assert len(number.partition(".")[2]) <= 1, number


# bar_chart


def test_bar_chart_draws_one_rect_per_bar_with_matching_data_attributes() -> None:
    bars = [("Mon", 12.0), ("Tue", 30.0), ("Wed", 0.0), ("Thu", 7.5)]
    markup = bar_chart(bars, title="Calls per day", unit="calls")
    rects = [r for r in find_all(parse(markup), "rect") if r.get("class") == "bar"]
    assert [(r.get("data-label"), r.get("data-value")) for r in rects] == [
        ("Mon", "12"), ("Tue", "30"), ("Wed", "0"), ("Thu", "7.5")]
    assert [title_of(r) for r in rects][:2] == ["Mon: 12 calls", "Tue: 30 calls"]
    heights = [float(r.get("height", "")) for r in rects]
    assert heights[1] > heights[0] > heights[3] > heights[2] == 0
    assert_csp_safe(markup)


def test_bar_chart_escapes_hostile_labels() -> None:
    markup = bar_chart([(HOSTILE, 3.0)], title=HOSTILE, unit="calls")
    assert "<script>" not in markup
    (rect,) = [r for r in find_all(parse(markup), "rect") if r.get("class") == "bar"]
    assert rect.get("data-label") == HOSTILE
    assert title_of(rect) == f"{HOSTILE}: 3 calls"


def test_bar_chart_without_bars_says_no_data() -> None:
    root = parse(bar_chart([], title="Calls", unit="calls"))
    assert root.get("viewBox") == "0 0 720 260"
    assert "No data" in [t.text for t in find_all(root, "text")]


def test_bar_chart_negative_value_does_not_crash() -> None:
    rects = [r for r in find_all(parse(bar_chart([("a", -5.0), ("b", 10.0)], title="t", unit="")), "rect")
             if r.get("class") == "bar"]
    assert all(float(r.get("height", "")) > 0 for r in rects)


def test_stacked_bar_chart_draws_a_segment_per_series_and_a_legend() -> None:
    bars = [("Mon", 10.0), ("Tue", 6.0)]
    stacked = {"answered": [8.0, 5.0], "missed": [2.0, 1.0]}
    markup = bar_chart(bars, title="Calls", unit="calls", stacked=stacked)
    root = parse(markup)
    for name, values in stacked.items():
        rects = find_all(series_group(root, name), "rect")
        assert [r.get("data-value") for r in rects] == [f"{v:g}" for v in values]
        assert [r.get("data-label") for r in rects] == ["Mon", "Tue"]
    answered_mon, missed_mon = (find_all(series_group(root, n), "rect")[0] for n in stacked)
    # The second segment sits right on top of the first.
    assert float(missed_mon.get("y", "")) + float(missed_mon.get("height", "")) == pytest.approx(
        float(answered_mon.get("y", "")), abs=0.1)
    legend = next(g for g in find_all(root, "g") if g.get("class") == "legend")
    assert [t.text for t in find_all(legend, "text")] == ["answered", "missed"]
    assert_csp_safe(markup)


def test_stacked_bar_chart_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="'missed'"):
        bar_chart([("Mon", 1.0), ("Tue", 2.0)], title="t", unit="", stacked={"missed": [1.0]})
