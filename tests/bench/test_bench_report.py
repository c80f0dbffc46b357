"""The bench's report: which figures its ratios and issue 13's goals are made of.

The measurements themselves are the bench's (``python -m bench``), never a test's.
"""

from bench.__main__ import GOALS, Sample, Series, _document, _goals, render_markdown


def _series(name: str, wall: float, stage: float = 1.0) -> Series:
    samples = [
        Sample(wall_seconds=wall, peak_rss_mib=400.0, report={"seconds": stage, "rmse": 4.5})
    ]
    return Series(name, samples)


def test_the_course_goal_is_measured_against_the_courses_orchestrated_pipeline() -> None:
    """Issue 13 asks for 0.30x the course's orchestrated pipeline (a Prefect flow tracked in
    MLflow), not its bare training; the bare ratio stays in the report beside it."""
    series = {
        "course": _series("course", 20.0, stage=18.0),
        "course_flow": _series("course_flow", 40.0),
        "stages_x1": _series("stages_x1", 5.0, stage=2.0),
        "flow": _series("flow", 10.0),
    }
    cold = Sample(wall_seconds=15.0, peak_rss_mib=600.0, report={})
    doc = _document(series, cold, [1])
    doc["twin"] = {"skipped": "--twin-runs 0"}
    goals = _goals(doc)
    assert doc["ratios"]["flow_over_course_process"] == 0.5
    assert doc["ratios"]["flow_over_course_flow_process"] == 0.25
    assert goals["flow_over_course_flow_process"] == {
        "value": 0.25,
        "max": GOALS["flow_over_course_flow_process_max"],
        "met": True,
    }
    assert goals["flow_over_stages_process"]["value"] == 2.0
    doc["goals"] = goals
    report = render_markdown(doc)
    assert "| full flow / course, orchestrated (process time) | 0.25x |" in report
    assert "| full flow / course, bare (process time) | 0.50x |" in report
    assert "| flow_over_course_flow_process | 0.25 | 0.30 | yes |" in report
