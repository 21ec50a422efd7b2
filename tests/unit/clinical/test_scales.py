from __future__ import annotations

import pytest

from ketaflow.clinical.scales import (
    scale_definition,
    scale_definitions,
    scale_text,
    score_cadss,
    score_cadss6,
    score_cssrs_screener,
    score_gad7,
    score_items,
    score_madrs,
    score_moaas,
    score_modified_aldrete,
    score_nrs_pain,
    score_phq9,
    score_qids_sr16,
)
from ketaflow.errors import InputError, NotFoundError

# Expected totals are computed by hand in the comments.


@pytest.mark.parametrize(
    ("items", "total", "band", "flags"),
    [
        ([0] * 9, 0, "minimal", set()),
        ([1, 1, 1, 1, 1, 0, 0, 0, 0], 5, "mild", set()),  # 5 -> mild
        ([2, 2, 2, 1, 1, 1, 1, 0, 0], 10, "moderate", {"screen_positive"}),  # 2*3+4 = 10
        ([2, 2, 2, 2, 2, 2, 2, 1, 0], 15, "moderately severe", {"screen_positive"}),  # 14+1
        ([3] * 9, 27, "severe", {"screen_positive", "suicide_risk_workflow"}),
        ([0, 0, 0, 0, 0, 0, 0, 0, 1], 1, "minimal", {"suicide_risk_workflow"}),  # item 9 > 0
        ([3, 3, 3, 3, 2, 2, 2, 2, 0], 20, "severe", {"screen_positive"}),  # 12 + 8
    ],
)
def test_phq9(items: list[int], total: int, band: str, flags: set[str]) -> None:
    s = score_phq9(items)
    assert (s.total, s.band, set(s.flags)) == (total, band, flags)
    assert s.total_max == 27


@pytest.mark.parametrize(
    ("items", "total", "band"),
    [
        ([0, 0, 0, 0, 0, 0, 4 - 4], 0, "minimal"),
        ([1, 1, 1, 1, 0, 0, 0], 4, "minimal"),
        ([1, 1, 1, 1, 1, 0, 0], 5, "mild"),
        ([2, 2, 2, 2, 1, 1, 0], 10, "moderate"),
        ([3, 3, 3, 2, 2, 2, 0], 15, "severe"),
        ([3] * 7, 21, "severe"),
    ],
)
def test_gad7(items: list[int], total: int, band: str) -> None:
    s = score_gad7(items)
    assert (s.total, s.band) == (total, band)


@pytest.mark.parametrize(
    ("items", "total", "band", "suicidal"),
    [
        ([0] * 10, 0, "normal", False),
        ([1, 1, 1, 1, 1, 1, 1, 0, 0, 0], 7, "mild", False),
        ([2] * 10, 20, "moderate", False),
        ([4, 4, 4, 4, 4, 4, 4, 2, 2, 3], 35, "severe", False),  # 28 + 7
        ([6, 6, 6, 6, 6, 6, 6, 6, 6, 6], 60, "severe", True),
        ([0, 0, 0, 0, 0, 0, 0, 0, 0, 4], 4, "normal", True),  # item 10 >= 4
        ([3, 3, 3, 3, 3, 3, 1, 0, 0, 3], 22, "moderate", False),  # 18 + 1 + 3
    ],
)
def test_madrs(items: list[int], total: int, band: str, suicidal: bool) -> None:
    s = score_madrs(items)
    assert (s.total, s.band, s.has_flag("suicidal_thoughts")) == (total, band, suicidal)


def test_qids_sr16_uses_the_highest_item_per_domain() -> None:
    # sleep max(3,0,1,0)=3; sad 2; appetite/weight max(0,1,0,3)=3; conc 1; self 1; suicide 0;
    # interest 2; energy 1; psychomotor max(0,2)=2 -> 3+2+3+1+1+0+2+1+2 = 15
    s = score_qids_sr16([3, 0, 1, 0, 2, 0, 1, 0, 3, 1, 1, 0, 2, 1, 0, 2])
    assert s.total == 15
    assert s.band == "moderate"
    assert s.domain_scores == (3, 2, 3, 1, 1, 0, 2, 1, 2)
    assert sum(v or 0 for v in s.items) == 17  # a plain sum would be wrong


@pytest.mark.parametrize(
    ("items", "total", "band"),
    [
        ([0] * 16, 0, "none"),
        ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1], 8, "mild"),  # 9 domains, item12=0
        ([3] * 16, 27, "very severe"),
        ([3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 0, 0, 0, 0], 18, "severe"),  # domains 1-6 x 3
        ([0, 0, 0, 2, 2, 0, 0, 2, 0, 2, 2, 0, 2, 2, 2, 0], 16, "severe"),  # 8 domains x 2
    ],
)
def test_qids_sr16_bands(items: list[int], total: int, band: str) -> None:
    s = score_qids_sr16(items)
    assert (s.total, s.band) == (total, band)


def test_qids_item12_routes_to_suicide_workflow() -> None:
    items = [0] * 16
    items[11] = 1
    assert score_qids_sr16(items).has_flag("suicide_risk_workflow")


def test_cadss_threshold_and_cadss6_derivation() -> None:
    items = [0] * 23
    items[0] = 2  # item 1
    items[1] = 1  # item 2
    items[5] = 1  # item 6
    items[14] = 1  # item 15
    items[21] = 0  # item 22
    items[3] = 3  # item 4: not in CADSS-6
    full = score_cadss(items)
    assert full.total == 8
    assert full.has_flag("dissociation_present")
    six = score_cadss6(items)
    assert six.items == (2, 1, 1, 0, 1, 0)  # items 1, 2, 6, 7, 15, 22
    assert six.total == 5
    assert six.total_max == 24
    assert score_cadss6([4, 4, 4, 4, 4, 4]).total == 24


def test_cadss_four_is_below_threshold() -> None:
    assert not score_cadss([1, 1, 1, 1] + [0] * 19).has_flag("dissociation_present")
    assert score_cadss([1, 1, 1, 1, 1] + [0] * 18).has_flag("dissociation_present")


@pytest.mark.parametrize(
    ("pain", "band"), [(0, "none"), (3, "mild"), (4, "moderate"), (6, "moderate"), (10, "severe")]
)
def test_nrs_pain(pain: int, band: str) -> None:
    assert score_nrs_pain(pain).band == band


@pytest.mark.parametrize(
    ("level", "flags"),
    [
        (5, set()),
        (4, set()),
        (3, {"moderate_sedation"}),
        (1, {"moderate_sedation"}),
        (0, {"moderate_sedation", "loss_of_consciousness"}),
    ],
)
def test_moaas(level: int, flags: set[str]) -> None:
    assert set(score_moaas(level).flags) == flags


def test_modified_aldrete() -> None:
    s = score_modified_aldrete(
        activity=2, respiration=2, circulation=2, consciousness=1, oxygen_saturation=2
    )
    assert s.total == 9
    assert s.has_flag("discharge_ready")
    low = score_modified_aldrete(
        activity=2, respiration=2, circulation=1, consciousness=1, oxygen_saturation=2
    )
    assert low.total == 8
    assert not low.has_flag("discharge_ready")
    with pytest.raises(InputError) as err:
        score_modified_aldrete(
            activity=3, respiration=2, circulation=2, consciousness=2, oxygen_saturation=2
        )
    assert err.value.field == "modified_aldrete.item1"


@pytest.mark.parametrize(
    ("answers", "level"),
    [
        (
            {
                "q1_wish_to_be_dead": False,
                "q2_suicidal_thoughts": False,
                "q6_behaviour_lifetime": False,
            },
            "none",
        ),
        (
            {
                "q1_wish_to_be_dead": True,
                "q2_suicidal_thoughts": False,
                "q6_behaviour_lifetime": False,
            },
            "low",
        ),
        (
            {
                "q1_wish_to_be_dead": True,
                "q2_suicidal_thoughts": True,
                "q3_thoughts_with_method": True,
                "q4_intent": False,
                "q5_plan": False,
                "q6_behaviour_lifetime": False,
            },
            "moderate",
        ),
        (
            {
                "q1_wish_to_be_dead": True,
                "q2_suicidal_thoughts": True,
                "q3_thoughts_with_method": True,
                "q4_intent": True,
                "q5_plan": False,
                "q6_behaviour_lifetime": False,
            },
            "high",
        ),
        (
            {
                "q1_wish_to_be_dead": False,
                "q2_suicidal_thoughts": False,
                "q6_behaviour_lifetime": True,
                "q6_behaviour_past_3_months": False,
            },
            "moderate",
        ),
        (
            {
                "q1_wish_to_be_dead": False,
                "q2_suicidal_thoughts": False,
                "q6_behaviour_lifetime": True,
                "q6_behaviour_past_3_months": True,
            },
            "high",
        ),
    ],
)
def test_cssrs_triage(answers: dict[str, bool], level: str) -> None:
    s = score_cssrs_screener(**answers)
    assert s.band == level
    assert s.has_flag("suicide_risk_workflow") is (level in ("moderate", "high"))
    assert s.has_flag("high_risk") is (level == "high")


def test_cssrs_skip_logic_is_enforced() -> None:
    with pytest.raises(InputError) as err:
        score_cssrs_screener(
            q1_wish_to_be_dead=True,
            q2_suicidal_thoughts=False,
            q4_intent=True,
            q6_behaviour_lifetime=False,
        )
    assert err.value.field == "cssrs_screener.q4"
    with pytest.raises(InputError) as err:
        score_cssrs_screener(
            q1_wish_to_be_dead=True, q2_suicidal_thoughts=True, q6_behaviour_lifetime=False
        )
    assert err.value.field == "cssrs_screener.q3"
    with pytest.raises(InputError) as err:
        score_cssrs_screener(
            q1_wish_to_be_dead=False, q2_suicidal_thoughts=False, q6_behaviour_lifetime=True
        )
    assert err.value.field == "cssrs_screener.q6_past_3_months"


@pytest.mark.parametrize(
    ("scale", "items", "field"),
    [
        ("phq9", [0] * 8, "phq9.items"),
        ("phq9", [0] * 8 + [4], "phq9.item9"),
        ("phq9", [0, 0, -1, 0, 0, 0, 0, 0, 0], "phq9.item3"),
        ("gad7", [0, 0, 0, 0, 0, 0, 1.5], "gad7.item7"),
        ("madrs", [0] * 9 + [7], "madrs.item10"),
        ("qids_sr16", [0] * 15, "qids_sr16.items"),
        ("cadss", [0] * 22 + [5], "cadss.item23"),
        ("phq9", [True] + [0] * 8, "phq9.item1"),
    ],
)
def test_bad_items_name_the_item(scale: str, items: list[int], field: str) -> None:
    with pytest.raises(InputError) as err:
        score_items(scale, items)
    assert err.value.field == field


def test_text_ships_only_for_free_scales() -> None:
    for sid, d in scale_definitions().items():
        if d.ships_text:
            text = scale_text(sid)
            assert text.items, sid
        else:
            with pytest.raises(NotFoundError, match="ships without item text"):
                scale_text(sid)
    assert {s for s, d in scale_definitions().items() if not d.ships_text} == {
        "cadss",
        "cadss6",
        "madrs",
        "qids_sr16",
        "cssrs_screener",
    }
    phq = scale_text("phq9")
    assert len(phq.items) == 9
    assert phq.items[8].loinc == "44260-8"
    assert [o.value for o in phq.options] == [0, 1, 2, 3]


def test_item_text_counts_match_definitions() -> None:
    for sid, d in scale_definitions().items():
        if d.ships_text:
            assert len(scale_text(sid).items) == d.n_items, sid


def test_unknown_scale() -> None:
    with pytest.raises(NotFoundError, match="known scales"):
        scale_definition("bdi2")
