"""Rating scales: validation, scoring, severity bands and flags.

Scale definitions are data (``clinical/data/scales.toml``, each number with its source); item
wording ships only for scales that are free to reproduce (``scale_text.toml``; see
:func:`scale_text`). Scoring is one function per scale so that each scale's own rules stay
visible:

=====================  ==========================================================
:func:`score_cadss`    23 items 0-4; ``dissociation_present`` when total > 4
:func:`score_cadss6`   6 items 0-4, or derived from a 23-item CADSS
:func:`score_phq9`     9 items 0-3; item 9 > 0 -> ``suicide_risk_workflow``
:func:`score_gad7`     7 items 0-3
:func:`score_madrs`    10 items 0-6; item 10 >= 4 -> ``suicidal_thoughts``
:func:`score_qids_sr16` 16 items 0-3 scored over 9 domains (highest item per domain)
:func:`score_nrs_pain` one value 0-10
:func:`score_moaas`    one value 0-5; <= 3 moderate sedation; 0 loss of consciousness
:func:`score_modified_aldrete` five named items 0-2; >= 9 ``discharge_ready``
:func:`score_cssrs_screener`   yes/no answers -> risk level none/low/moderate/high
=====================  ==========================================================

Bad answers raise :class:`~ketaflow.errors.InputError` naming the item (``phq9.item9``).

>>> s = score_phq9([1, 1, 2, 0, 1, 0, 0, 0, 1])
>>> s.total, s.band, sorted(s.flags)
(6, 'mild', ['suicide_risk_workflow'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from ketaflow.clinical._data import (
    check_keys,
    get_bool,
    get_number,
    get_optional_number,
    get_str,
    read_packaged,
)
from ketaflow.errors import InputError, NotFoundError, ProtocolError


@dataclass(frozen=True, slots=True)
class Band:
    """An inclusive range of totals with a severity label."""

    min_total: int
    max_total: int
    label: str


@dataclass(frozen=True, slots=True)
class FlagRule:
    """A flag raised when an item (or the total) lies within [min_value, max_value]."""

    code: str
    item: int | None  # None = applies to the total
    min_value: float | None
    max_value: float | None
    source: str

    def applies(self, value: float) -> bool:
        """Whether ``value`` lies in the flag's inclusive range."""
        if self.min_value is not None and value < self.min_value:
            return False
        return not (self.max_value is not None and value > self.max_value)


@dataclass(frozen=True, slots=True)
class ScaleDefinition:
    """Structure, bands, flags and outcome cut-offs of one scale (from ``scales.toml``)."""

    id: str
    name: str
    short_name: str
    n_items: int
    item_min: int
    item_max: int
    domains: tuple[tuple[int, ...], ...]
    bands: tuple[Band, ...]
    flags: tuple[FlagRule, ...]
    ships_text: bool
    licence: str
    source: str
    bands_source: str
    response_min_fall_pct: float | None
    remission_max_total: float | None
    response_source: str
    remission_source: str
    loinc_panel: str | None
    loinc_total: str | None
    from_cadss_items: tuple[int, ...]

    @property
    def total_min(self) -> int:
        """Lowest possible total."""
        return self.item_min * len(self.domains)

    @property
    def total_max(self) -> int:
        """Highest possible total."""
        return self.item_max * len(self.domains)

    def band_for(self, total: int) -> str | None:
        """The severity label for ``total`` (None if the scale has no bands)."""
        for band in self.bands:
            if band.min_total <= total <= band.max_total:
                return band.label
        return None


@dataclass(frozen=True, slots=True)
class ScaleScore:
    """The scored result of one administration of a scale."""

    scale_id: str
    total: int
    total_max: int
    band: str | None
    flags: frozenset[str]
    items: tuple[int | None, ...]
    #: Per-domain scores for domain-scored scales (QIDS-SR16), else empty.
    domain_scores: tuple[int, ...] = ()

    def has_flag(self, code: str) -> bool:
        """Whether ``code`` was raised."""
        return code in self.flags


_SCALE_REQUIRED = ("name", "short_name", "items", "item_min", "item_max", "ships_text", "licence")
_SCALE_OPTIONAL = (
    "source",
    "domains",
    "bands",
    "bands_source",
    "flags",
    "response_min_fall_pct",
    "response_source",
    "remission_max_total",
    "remission_source",
    "loinc_panel",
    "loinc_total",
    "from_cadss_items",
)


def _int(table: Mapping[str, Any], key: str, where: str) -> int:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{where}: {key!r} must be an integer, got {value!r}")
    return value


def _int_list(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ProtocolError(f"{where}: expected a list of integers, got {value!r}")
    return tuple(value)


def _parse_scale(scale_id: str, t: Mapping[str, Any]) -> ScaleDefinition:
    where = f"scales.toml [{scale_id}]"
    check_keys(t, _SCALE_REQUIRED, _SCALE_OPTIONAL, where)
    n_items = _int(t, "items", where)
    item_min = _int(t, "item_min", where)
    item_max = _int(t, "item_max", where)
    if n_items < 1 or item_min >= item_max:
        raise ProtocolError(f"{where}: need items >= 1 and item_min < item_max")
    if "domains" in t:
        raw = t["domains"]
        if not isinstance(raw, list):
            raise ProtocolError(f"{where}: 'domains' must be a list of item-number lists")
        domains = tuple(_int_list(d, f"{where} domains") for d in raw)
        covered = sorted(i for d in domains for i in d)
        if covered != list(range(1, n_items + 1)):
            raise ProtocolError(f"{where}: domains must use every item 1..{n_items} exactly once")
    else:
        domains = tuple((i,) for i in range(1, n_items + 1))
    bands: list[Band] = []
    for i, b in enumerate(t.get("bands", [])):
        bw = f"{where} bands[{i}]"
        check_keys(b, ("min", "max", "label"), (), bw)
        bands.append(Band(_int(b, "min", bw), _int(b, "max", bw), get_str(b, "label", bw)))
    definition_total_min = item_min * len(domains)
    definition_total_max = item_max * len(domains)
    if bands:
        expected = definition_total_min
        for b in bands:
            if b.min_total != expected or b.max_total < b.min_total:
                raise ProtocolError(
                    f"{where}: bands must tile {definition_total_min}..{definition_total_max} "
                    f"without gaps or overlaps (problem at {b.label!r})"
                )
            expected = b.max_total + 1
        if expected != definition_total_max + 1:
            raise ProtocolError(f"{where}: bands must end at {definition_total_max}")
    flags: list[FlagRule] = []
    for i, f in enumerate(t.get("flags", [])):
        fw = f"{where} flags[{i}]"
        check_keys(f, ("code", "source"), ("item", "total", "min", "max"), fw)
        is_total = get_bool(f, "total", fw, False)
        item = None if is_total else _int(f, "item", fw)
        if item is not None and not 1 <= item <= n_items:
            raise ProtocolError(f"{fw}: item must be 1..{n_items}")
        lo = get_optional_number(f, "min", fw)
        hi = get_optional_number(f, "max", fw)
        if lo is None and hi is None:
            raise ProtocolError(f"{fw}: give 'min' and/or 'max'")
        flags.append(FlagRule(get_str(f, "code", fw), item, lo, hi, get_str(f, "source", fw)))
    from_cadss = _int_list(t.get("from_cadss_items", []), f"{where} from_cadss_items")
    return ScaleDefinition(
        id=scale_id,
        name=get_str(t, "name", where),
        short_name=get_str(t, "short_name", where),
        n_items=n_items,
        item_min=item_min,
        item_max=item_max,
        domains=domains,
        bands=tuple(bands),
        flags=tuple(flags),
        ships_text=get_bool(t, "ships_text", where, False),
        licence=get_str(t, "licence", where),
        source=str(t.get("source", "")),
        bands_source=str(t.get("bands_source", "")),
        response_min_fall_pct=(
            get_number(t, "response_min_fall_pct", where) if "response_min_fall_pct" in t else None
        ),
        remission_max_total=get_optional_number(t, "remission_max_total", where),
        response_source=str(t.get("response_source", "")),
        remission_source=str(t.get("remission_source", "")),
        loinc_panel=t.get("loinc_panel"),
        loinc_total=t.get("loinc_total"),
        from_cadss_items=from_cadss,
    )


@cache
def scale_definitions() -> Mapping[str, ScaleDefinition]:
    """Every shipped scale by id (``phq9``, ``madrs``, ...)."""
    data = read_packaged("scales.toml")
    return {sid: _parse_scale(sid, t) for sid, t in data.items()}


def scale_definition(scale_id: str) -> ScaleDefinition:
    """One scale's definition; NotFoundError names the known ids."""
    defs = scale_definitions()
    if scale_id not in defs:
        raise NotFoundError(f"unknown scale {scale_id!r}; known scales: {', '.join(sorted(defs))}")
    return defs[scale_id]


@dataclass(frozen=True, slots=True)
class ScaleItemText:
    """Wording of one item."""

    number: int
    text: str
    loinc: str | None = None


@dataclass(frozen=True, slots=True)
class ScaleOption:
    """One answer option with its score."""

    value: int
    text: str
    loinc: str | None = None


@dataclass(frozen=True, slots=True)
class ScaleText:
    """Wording of a free-to-use scale: stem, answer options and items."""

    scale_id: str
    stem: str
    options: tuple[ScaleOption, ...]
    items: tuple[ScaleItemText, ...]


@cache
def _texts() -> Mapping[str, ScaleText]:
    data = read_packaged("scale_text.toml")
    out: dict[str, ScaleText] = {}
    for sid, t in data.items():
        where = f"scale_text.toml [{sid}]"
        check_keys(t, ("stem", "options", "items"), (), where)
        options = tuple(
            ScaleOption(_int(o, "value", where), get_str(o, "text", where), o.get("loinc"))
            for o in t["options"]
        )
        items = tuple(
            ScaleItemText(_int(i, "number", where), get_str(i, "text", where), i.get("loinc"))
            for i in t["items"]
        )
        out[sid] = ScaleText(sid, get_str(t, "stem", where), options, items)
    return out


def scale_text(scale_id: str) -> ScaleText:
    """Item wording of a scale that ships text.

    Raises NotFoundError for scales scored without text (CADSS, MADRS, QIDS-SR16, C-SSRS):
    their wording is licensed and must come from the clinic's own licensed form.
    """
    definition = scale_definition(scale_id)
    texts = _texts()
    if not definition.ships_text or scale_id not in texts:
        raise NotFoundError(
            f"scale {scale_id!r} ships without item text ({definition.licence}); use the "
            "clinic's licensed form and enter the item scores"
        )
    return texts[scale_id]


def _check_items(definition: ScaleDefinition, items: Sequence[int]) -> tuple[int, ...]:
    sid = definition.id
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise InputError(
            f"{sid}: items must be a list of {definition.n_items} integers", field=f"{sid}.items"
        )
    if len(items) != definition.n_items:
        raise InputError(
            f"{sid}: expected {definition.n_items} item scores, got {len(items)}",
            field=f"{sid}.items",
        )
    checked: list[int] = []
    for n, value in enumerate(items, start=1):
        name = f"{sid}.item{n}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(
                f"{name}: must be an integer {definition.item_min} to {definition.item_max}, "
                f"got {value!r}",
                field=name,
            )
        if not definition.item_min <= value <= definition.item_max:
            raise InputError(
                f"{name}: must be {definition.item_min} to {definition.item_max}, got {value}",
                field=name,
            )
        checked.append(value)
    return tuple(checked)


def _score(definition: ScaleDefinition, items: Sequence[int]) -> ScaleScore:
    values = _check_items(definition, items)
    domain_scores = tuple(max(values[i - 1] for i in d) for d in definition.domains)
    total = sum(domain_scores)
    flags = set()
    for rule in definition.flags:
        value = total if rule.item is None else values[rule.item - 1]
        if rule.applies(value):
            flags.add(rule.code)
    multi_item_domains = any(len(d) > 1 for d in definition.domains)
    return ScaleScore(
        scale_id=definition.id,
        total=total,
        total_max=definition.total_max,
        band=definition.band_for(total),
        flags=frozenset(flags),
        items=values,
        domain_scores=domain_scores if multi_item_domains else (),
    )


def score_items(scale_id: str, items: Sequence[int]) -> ScaleScore:
    """Score any item-list scale by id (not the C-SSRS screener or the named-item Aldrete)."""
    if scale_id == "cssrs_screener":
        raise InputError(
            "cssrs_screener: answers are yes/no; use score_cssrs_screener()", field="scale_id"
        )
    return _score(scale_definition(scale_id), items)


def score_cadss(items: Sequence[int]) -> ScaleScore:
    """CADSS, 23 items scored 0-4; total 0-92; flag ``dissociation_present`` when total > 4."""
    return _score(scale_definition("cadss"), items)


def score_cadss6(items: Sequence[int]) -> ScaleScore:
    """CADSS-6: six item scores 0-4 (total 0-24), or a full 23-item CADSS to derive them from.

    The six items are CADSS items 1, 2, 6, 7, 15 and 22 (Rodrigues et al. 2021).
    """
    definition = scale_definition("cadss6")
    if not isinstance(items, str | bytes) and isinstance(items, Sequence) and len(items) == 23:
        full = _check_items(scale_definition("cadss"), items)
        items = [full[i - 1] for i in definition.from_cadss_items]
    return _score(definition, items)


def score_phq9(items: Sequence[int]) -> ScaleScore:
    """PHQ-9, 9 items 0-3 (total 0-27). Any item 9 > 0 flags ``suicide_risk_workflow``."""
    return _score(scale_definition("phq9"), items)


def score_gad7(items: Sequence[int]) -> ScaleScore:
    """GAD-7, 7 items 0-3 (total 0-21)."""
    return _score(scale_definition("gad7"), items)


def score_madrs(items: Sequence[int]) -> ScaleScore:
    """MADRS, 10 items 0-6 (total 0-60). Item 10 >= 4 flags ``suicidal_thoughts``."""
    return _score(scale_definition("madrs"), items)


def score_qids_sr16(items: Sequence[int]) -> ScaleScore:
    """QIDS-SR16, 16 items 0-3 scored over 9 domains (total 0-27).

    Sleep = highest of items 1-4, appetite/weight = highest of 6-9, psychomotor = highest of
    15-16; items 5 and 10-14 count as they are.
    """
    return _score(scale_definition("qids_sr16"), items)


def score_nrs_pain(pain_0_10: int) -> ScaleScore:
    """Numeric pain rating 0-10."""
    return _score(scale_definition("nrs_pain"), [pain_0_10])


def score_moaas(level_0_5: int) -> ScaleScore:
    """MOAA/S level 0-5; flags ``moderate_sedation`` (<= 3) and ``loss_of_consciousness`` (0)."""
    return _score(scale_definition("moaas"), [level_0_5])


def score_modified_aldrete(
    *,
    activity: int,
    respiration: int,
    circulation: int,
    consciousness: int,
    oxygen_saturation: int,
) -> ScaleScore:
    """Modified Aldrete (5 items 0-2, total 0-10); flag ``discharge_ready`` when >= 9."""
    return _score(
        scale_definition("modified_aldrete"),
        [activity, respiration, circulation, consciousness, oxygen_saturation],
    )


#: C-SSRS screener risk levels, lowest first; ScaleScore.total is the index.
CSSRS_RISK_LEVELS = ("none", "low", "moderate", "high")


def score_cssrs_screener(
    *,
    q1_wish_to_be_dead: bool,
    q2_suicidal_thoughts: bool,
    q3_thoughts_with_method: bool | None = None,
    q4_intent: bool | None = None,
    q5_plan: bool | None = None,
    q6_behaviour_lifetime: bool,
    q6_behaviour_past_3_months: bool | None = None,
) -> ScaleScore:
    """C-SSRS screener triage (answers are yes/no).

    Q2 "no" skips Q3-Q5 (they must then be None or False). Q6 "yes" needs the past-3-months
    follow-up. Risk: high = Q4, Q5, or Q6 within 3 months; moderate = Q3, or Q6 only longer ago;
    low = Q1 or Q2 only; else none. ``total`` is the index in :data:`CSSRS_RISK_LEVELS`; flags
    ``suicide_risk_workflow`` (moderate or high) and ``high_risk``.
    """
    answers: dict[str, bool | None] = {
        "q1": q1_wish_to_be_dead,
        "q2": q2_suicidal_thoughts,
        "q3": q3_thoughts_with_method,
        "q4": q4_intent,
        "q5": q5_plan,
        "q6": q6_behaviour_lifetime,
        "q6_past_3_months": q6_behaviour_past_3_months,
    }
    for key, value in answers.items():
        if value is not None and not isinstance(value, bool):
            raise InputError(
                f"cssrs_screener.{key}: must be yes (true) or no (false), got {value!r}",
                field=f"cssrs_screener.{key}",
            )
    for key in ("q1", "q2", "q6"):
        if answers[key] is None:
            raise InputError(
                f"cssrs_screener.{key}: an answer is required", field=f"cssrs_screener.{key}"
            )
    if not q2_suicidal_thoughts:
        for key in ("q3", "q4", "q5"):
            if answers[key]:
                raise InputError(
                    f"cssrs_screener.{key}: asked only when Q2 is yes; Q2 is no, so leave it empty",
                    field=f"cssrs_screener.{key}",
                )
    else:
        for key in ("q3", "q4", "q5"):
            if answers[key] is None:
                raise InputError(
                    f"cssrs_screener.{key}: required when Q2 is yes",
                    field=f"cssrs_screener.{key}",
                )
    if q6_behaviour_lifetime and q6_behaviour_past_3_months is None:
        raise InputError(
            "cssrs_screener.q6_past_3_months: required when Q6 is yes",
            field="cssrs_screener.q6_past_3_months",
        )
    if not q6_behaviour_lifetime and q6_behaviour_past_3_months:
        raise InputError(
            "cssrs_screener.q6_past_3_months: cannot be yes when Q6 (lifetime) is no",
            field="cssrs_screener.q6_past_3_months",
        )
    if q4_intent or q5_plan or q6_behaviour_past_3_months:
        level = 3
    elif q3_thoughts_with_method or q6_behaviour_lifetime:
        level = 2
    elif q1_wish_to_be_dead or q2_suicidal_thoughts:
        level = 1
    else:
        level = 0
    flags = set()
    if level >= 2:
        flags.add("suicide_risk_workflow")
    if level == 3:
        flags.add("high_risk")
    items = tuple(None if v is None else int(v) for v in answers.values())
    return ScaleScore(
        scale_id="cssrs_screener",
        total=level,
        total_max=3,
        band=CSSRS_RISK_LEVELS[level],
        flags=frozenset(flags),
        items=items,
    )
