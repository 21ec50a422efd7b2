"""PK models as data: TOML files with parameters, covariates, citation and validity.

Every shipped model is a file in ``ketaflow/pk/models/``; :func:`load_model` reads one by id
(the file name without ``.toml``) and :func:`load_model_file` reads any path. The minimal form
is micro-constants::

    name = "Domino 1984"
    drug = "ketamine"
    [parameters]
    v1_l = 4.41              # or v1_l_per_kg = 0.063 (scales linearly with weight)
    k10_per_min = 0.4381
    k12_per_min = 0.5921
    k21_per_min = 0.247
    k13_per_min = 0.59
    k31_per_min = 0.0146
    ke0_per_min = 0.652

The clearance form (``cl_l_per_h``, ``v2_l``, ``q2_l_per_h``, ...) is scaled allometrically by
``[scaling]``: volumes x (WT/WTref)^volume_exponent, clearances x (WT/WTref)^clearance_exponent.
Unknown keys and missing required keys are errors that name the key.

Optional tables: ``[scaling]``, ``[covariates]`` (sex and age factors on clearance),
``[metabolite]``, ``[validity]`` (ranges that trigger :class:`ModelValidityWarning`),
``[variability]`` (log-normal between-subject SDs ``omega_<param>`` and correlations),
``[source]`` (citation, DOI, population, verification tags, notes).
"""

from __future__ import annotations

import math
import re
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ketaflow.datafile import check_keys, read_toml
from ketaflow.errors import ModelDefinitionError, ModelValidityWarning
from ketaflow.pk.parameters import MetaboliteParameters, PKParameters
from ketaflow.units import MIN_PER_H

FloatArray = npt.NDArray[np.float64]
Sex = Literal["male", "female"]

_TOP_KEYS = {
    "name",
    "id",
    "drug",
    "enantiomer",
    "default",
    "parameters",
    "scaling",
    "covariates",
    "metabolite",
    "validity",
    "variability",
    "source",
}
_MICRO = {
    "v1_l",
    "v1_l_per_kg",
    "k10_per_min",
    "k12_per_min",
    "k21_per_min",
    "k13_per_min",
    "k31_per_min",
    "ke0_per_min",
}
_CLEAR = {"v1_l", "v2_l", "v3_l", "cl_l_per_h", "q2_l_per_h", "q3_l_per_h", "ke0_per_min"}
_SCALING_KEYS = {"reference_weight_kg", "volume_exponent", "clearance_exponent"}
_COVARIATE_KEYS = {"cl_female_factor", "cl_age_exponent", "reference_age_y"}
_METABOLITE_KEYS = {
    "name",
    "fraction_formed",
    "v1_l",
    "cl_l_per_h",
    "v2_l",
    "q2_l_per_h",
    "scale_volume_with_weight",
}
_VALIDITY_KEYS = {"weight_kg", "age_y", "height_cm", "sex", "note", "caution"}
#: A metabolite name becomes part of output column names (``norketamine_ng_per_ml``).
_METABOLITE_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
_SOURCE_KEYS = {
    "citation",
    "doi",
    "pmid",
    "population",
    "verification",
    "ke0_source",
    "notes",
    "allometry",
}
#: Parameters that may carry between-subject variability (``omega_<name>``).
VARIABLE_PARAMETERS = (
    "v1",
    "v2",
    "v3",
    "cl",
    "q2",
    "q3",
    "ke0",
    "k10",
    "k12",
    "k21",
    "k13",
    "k31",
    "clm",
    "vm1",
)


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    check_keys(table, allowed, where, error=ModelDefinitionError)


def _number(table: Mapping[str, Any], key: str, where: str, *, positive: bool = True) -> float:
    if key not in table:
        raise ModelDefinitionError(f"{where}: missing required key {key!r}")
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ModelDefinitionError(f"{where}: {key} must be a number, got {value!r}")
    if positive and value <= 0:
        raise ModelDefinitionError(f"{where}: {key} must be > 0, got {value}")
    return float(value)


def _range(table: Mapping[str, Any], key: str, where: str) -> tuple[float, float] | None:
    if key not in table:
        return None
    value = table[key]
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int | float) for v in value)
        or value[0] > value[1]
    ):
        raise ModelDefinitionError(f"{where}: {key} must be [low, high], got {value!r}")
    return float(value[0]), float(value[1])


@dataclass(frozen=True)
class Validity:
    """Covariate ranges of the population the model was built from."""

    weight_kg: tuple[float, float] | None = None
    age_y: tuple[float, float] | None = None
    height_cm: tuple[float, float] | None = None
    sex: tuple[str, ...] | None = None
    note: str = ""
    #: Said every time the model is used (e.g. "built from ICU patients: not for outpatients").
    caution: str = ""


@dataclass(frozen=True)
class Variability:
    """Log-normal between-subject variability: SD of log(parameter) and correlations."""

    omega: dict[str, float] = field(default_factory=dict)
    correlation: dict[tuple[str, str], float] = field(default_factory=dict)
    source: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        """Parameters with an omega, in :data:`VARIABLE_PARAMETERS` order."""
        return tuple(p for p in VARIABLE_PARAMETERS if p in self.omega)

    def covariance(self) -> FloatArray:
        """Covariance matrix of the etas, in the order of :attr:`names` (log scale)."""
        names = self.names
        sd = np.array([self.omega[p] for p in names])
        corr = np.eye(len(names))
        for (a, b), r in self.correlation.items():
            i, j = names.index(a), names.index(b)
            corr[i, j] = corr[j, i] = r
        return np.asarray(corr * np.outer(sd, sd), dtype=np.float64)


@dataclass(frozen=True)
class Model:
    """A published PK model: how to compute a patient's parameters, and where it came from."""

    id: str
    name: str
    drug: str
    enantiomer: Literal["racemic", "S"]
    form: Literal["micro", "clearance"]
    values: dict[str, float]
    v1_per_kg: bool
    reference_weight_kg: float
    volume_exponent: float
    clearance_exponent: float
    covariates: dict[str, float]
    metabolite: dict[str, Any] | None
    validity: Validity
    variability: Variability
    source: dict[str, str]
    is_default: bool = False

    @property
    def n_compartments(self) -> int:
        """Number of parent compartments."""
        if self.form == "micro":
            return 1 + ("k12_per_min" in self.values) + ("k13_per_min" in self.values)
        return 1 + ("v2_l" in self.values) + ("v3_l" in self.values)

    @property
    def has_effect_site(self) -> bool:
        """Whether the model has a ke0."""
        return "ke0_per_min" in self.values

    @property
    def citation(self) -> str:
        """Citation text of the source publication."""
        return self.source.get("citation", "")

    @property
    def metabolite_name(self) -> str | None:
        """Name of the modelled metabolite (e.g. ``"norketamine"``), or None."""
        return None if self.metabolite is None else str(self.metabolite["name"])

    @property
    def variable_parameters(self) -> tuple[str, ...]:
        """Names that may carry an ``eta`` (and an ``omega``) in this model's form.

        Micro-constant models: an eta on ``v1`` scales every volume and inter-compartmental
        clearance together (k12, k21, k13, k31 unchanged) while ``cl`` is kept; ``cl`` scales
        k10. Clearance models: each volume and clearance separately. ``clm``/``vm1`` belong to
        the metabolite.
        """
        n = self.n_compartments
        if self.form == "micro":
            names = ["v1", "cl", "k12", "k21", "k13", "k31"][: 2 + 2 * (n - 1)]
        else:
            names = ["v1", "v2", "v3"][:n] + ["cl", "q2", "q3"][:n]
        if self.has_effect_site:
            names.append("ke0")
        if self.metabolite is not None:
            names += ["clm", "vm1"]
        return tuple(p for p in VARIABLE_PARAMETERS if p in names)

    def describe(self) -> dict[str, Any]:
        """Plain metadata (id, name, drug, population, DOI, verification, ...) for output."""
        return {
            "id": self.id,
            "name": self.name,
            "drug": self.drug,
            "enantiomer": self.enantiomer,
            "default": self.is_default,
            "compartments": self.n_compartments,
            "effect_site": self.has_effect_site,
            "metabolite": self.metabolite_name,
            "population": self.source.get("population", ""),
            "citation": self.citation,
            "doi": self.source.get("doi", ""),
            "verification": self.source.get("verification", ""),
            "allometry": self.source.get("allometry", ""),
            "ke0_source": self.source.get("ke0_source", ""),
            "validity": {
                "weight_kg": self.validity.weight_kg,
                "age_y": self.validity.age_y,
                "height_cm": self.validity.height_cm,
                "sex": self.validity.sex,
                "note": self.validity.note,
                "caution": self.validity.caution,
            },
            "variability": {
                "omega": dict(self.variability.omega),
                "correlation": {
                    f"{a},{b}": r for (a, b), r in self.variability.correlation.items()
                },
                "source": self.variability.source,
            },
        }

    def check_validity(
        self,
        *,
        weight_kg: npt.ArrayLike,
        age_y: npt.ArrayLike | None = None,
        height_cm: npt.ArrayLike | None = None,
        sex: str | None = None,
    ) -> list[str]:
        """Messages for every covariate outside the model's studied range (empty if none).

        A model-wide caution (``[validity] caution``, e.g. an ICU-only model) comes first and
        is always included.
        """
        problems: list[str] = [self.validity.caution] if self.validity.caution else []
        checks = (
            ("weight_kg", weight_kg, self.validity.weight_kg),
            ("age_y", age_y, self.validity.age_y),
            ("height_cm", height_cm, self.validity.height_cm),
        )
        for label, value, rng in checks:
            if value is None or rng is None:
                continue
            arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
            outside = (arr < rng[0]) | (arr > rng[1])
            if np.any(outside):
                problems.append(
                    f"{self.name}: {label} {arr[outside][0]:g} is outside the studied range "
                    f"{rng[0]:g} to {rng[1]:g}"
                    + (f" ({int(outside.sum())} patients)" if arr.size > 1 else "")
                )
        if sex is not None and self.validity.sex is not None and sex not in self.validity.sex:
            problems.append(f"{self.name}: studied only in {'/'.join(self.validity.sex)} subjects")
        return problems

    def parameters(
        self,
        *,
        weight_kg: npt.ArrayLike,
        age_y: npt.ArrayLike | None = None,
        sex: Sex | npt.ArrayLike | None = None,
        height_cm: npt.ArrayLike | None = None,
        eta: Mapping[str, npt.ArrayLike] | None = None,
        warn: bool = True,
    ) -> PKParameters:
        """Micro-constants for patients with these covariates (arrays give a batch).

        ``eta`` holds per-patient log-deviations (``{"cl": array, ...}``) for virtual
        populations: each named parameter is multiplied by ``exp(eta)``. Patients outside the
        validity ranges get a :class:`ModelValidityWarning` (unless ``warn=False``) but still a
        prediction.
        """
        w = np.atleast_1d(np.asarray(weight_kg, dtype=np.float64))
        if np.any(~np.isfinite(w)) or np.any(w <= 0):
            raise ModelDefinitionError("weight_kg must be a positive number")
        if warn:
            scalar_sex = sex if isinstance(sex, str) else None
            for msg in self.check_validity(
                weight_kg=w, age_y=age_y, height_cm=height_cm, sex=scalar_sex
            ):
                warnings.warn(msg, ModelValidityWarning, stacklevel=2)
        etas = {k: np.atleast_1d(np.asarray(v, dtype=np.float64)) for k, v in (eta or {}).items()}
        allowed = self.variable_parameters
        for key, value in etas.items():
            if key not in allowed:
                raise ModelDefinitionError(
                    f"eta: parameter {key!r} does not vary in {self.name}; "
                    f"choose from {', '.join(allowed)}"
                )
            if not np.all(np.isfinite(value)):
                raise ModelDefinitionError(f"eta[{key!r}] must be finite")

        def iiv(key: str) -> FloatArray | float:
            return np.exp(etas[key]) if key in etas else 1.0

        wr = w / self.reference_weight_kg
        vol = wr**self.volume_exponent
        clf = wr**self.clearance_exponent
        cl_factor: FloatArray | float = 1.0
        if sex is not None and "cl_female_factor" in self.covariates:
            female = np.asarray(sex) == "female"
            cl_factor = np.where(female, self.covariates["cl_female_factor"], 1.0)
        if age_y is not None and "cl_age_exponent" in self.covariates:
            ref_age = self.covariates.get("reference_age_y", 40.0)
            age = np.asarray(age_y, dtype=np.float64)
            cl_factor = cl_factor * (age / ref_age) ** self.covariates["cl_age_exponent"]
        v = self.values
        ke0 = v.get("ke0_per_min")
        ke0_arr = None if ke0 is None else ke0 * np.ones_like(w) * iiv("ke0")
        met = self._metabolite(w, etas)
        if self.form == "micro":
            v1 = (v["v1_l"] * w if self.v1_per_kg else v["v1_l"] * np.ones_like(w)) * iiv("v1")
            k10 = v["k10_per_min"] * cl_factor * iiv("cl") / iiv("v1")
            kw: dict[str, Any] = {}
            if "k12_per_min" in v:
                kw["k12_per_min"] = v["k12_per_min"] * iiv("k12")
                kw["k21_per_min"] = v["k21_per_min"] * iiv("k21")
            if "k13_per_min" in v:
                kw["k13_per_min"] = v["k13_per_min"] * iiv("k13")
                kw["k31_per_min"] = v["k31_per_min"] * iiv("k31")
            return PKParameters.create(
                v1_l=v1, k10_per_min=k10, ke0_per_min=ke0_arr, metabolite=met, **kw
            )
        ckw: dict[str, Any] = {}
        if "v2_l" in v:
            ckw["v2_l"] = v["v2_l"] * vol * iiv("v2")
            ckw["q2_l_per_min"] = v["q2_l_per_h"] / MIN_PER_H * clf * iiv("q2")
        if "v3_l" in v:
            ckw["v3_l"] = v["v3_l"] * vol * iiv("v3")
            ckw["q3_l_per_min"] = v["q3_l_per_h"] / MIN_PER_H * clf * iiv("q3")
        return PKParameters.from_clearances(
            v1_l=v["v1_l"] * vol * iiv("v1"),
            cl_l_per_min=v["cl_l_per_h"] / MIN_PER_H * clf * cl_factor * iiv("cl"),
            ke0_per_min=ke0_arr,
            metabolite=met,
            **ckw,
        )

    def _metabolite(
        self, w: FloatArray, etas: Mapping[str, FloatArray]
    ) -> MetaboliteParameters | None:
        m = self.metabolite
        if m is None:
            return None
        wr = w / self.reference_weight_kg
        clf = wr**self.clearance_exponent
        vol = wr**self.volume_exponent if m.get("scale_volume_with_weight", True) else 1.0
        vm1 = m["v1_l"] * vol * (np.exp(etas["vm1"]) if "vm1" in etas else 1.0)
        clm = m["cl_l_per_h"] / MIN_PER_H * clf * (np.exp(etas["clm"]) if "clm" in etas else 1.0)
        vm1 = np.asarray(vm1 * np.ones_like(w))
        k12 = np.zeros_like(w)
        k21 = np.zeros_like(w)
        n_cmt = 1
        if "v2_l" in m:
            n_cmt = 2
            k12 = m["q2_l_per_h"] / MIN_PER_H * clf / vm1
            k21 = m["q2_l_per_h"] / MIN_PER_H * clf / (m["v2_l"] * vol)
        return MetaboliteParameters(
            name=str(m.get("name", "metabolite")),
            fraction_formed=np.full_like(w, float(m.get("fraction_formed", 1.0))),
            v1_l=vm1,
            k10_per_min=np.asarray(clm / vm1),
            k12_per_min=np.asarray(k12 * np.ones_like(w)),
            k21_per_min=np.asarray(k21 * np.ones_like(w)),
            n_compartments=n_cmt,
        )


def parse_model(data: Mapping[str, Any], *, model_id: str, where: str) -> Model:
    """Validate a decoded TOML document into a :class:`Model`."""
    _check_keys(data, _TOP_KEYS, where)
    for key in ("name", "drug", "parameters"):
        if key not in data:
            raise ModelDefinitionError(f"{where}: missing required key {key!r}")
    name = data["name"]
    if not isinstance(name, str) or not name.strip():
        raise ModelDefinitionError(f"{where}: name must be a non-empty string")
    drug = data["drug"]
    if drug not in ("ketamine", "esketamine"):
        raise ModelDefinitionError(
            f"{where}: drug must be 'ketamine' or 'esketamine', got {drug!r}"
        )
    enantiomer = data.get("enantiomer", "S" if drug == "esketamine" else "racemic")
    if enantiomer not in ("racemic", "S"):
        raise ModelDefinitionError(f"{where}: enantiomer must be 'racemic' or 'S'")
    params = data["parameters"]
    if not isinstance(params, dict):
        raise ModelDefinitionError(f"{where}: [parameters] must be a table")
    pw = f"{where} [parameters]"
    if "cl_l_per_h" in params:
        form: Literal["micro", "clearance"] = "clearance"
        _check_keys(params, _CLEAR, pw)
        values = {k: _number(params, k, pw) for k in ("v1_l", "cl_l_per_h")}
        for vk, qk in (("v2_l", "q2_l_per_h"), ("v3_l", "q3_l_per_h")):
            if (vk in params) != (qk in params):
                raise ModelDefinitionError(f"{pw}: {vk} and {qk} must be given together")
            if vk in params:
                values[vk] = _number(params, vk, pw)
                values[qk] = _number(params, qk, pw)
        if "v3_l" in values and "v2_l" not in values:
            raise ModelDefinitionError(f"{pw}: v3_l needs v2_l")
        v1_per_kg = False
    else:
        form = "micro"
        _check_keys(params, _MICRO, pw)
        if ("v1_l" in params) == ("v1_l_per_kg" in params):
            raise ModelDefinitionError(f"{pw}: give exactly one of 'v1_l' or 'v1_l_per_kg'")
        v1_per_kg = "v1_l_per_kg" in params
        values = {"v1_l": _number(params, "v1_l_per_kg" if v1_per_kg else "v1_l", pw)}
        values["k10_per_min"] = _number(params, "k10_per_min", pw)
        for a, b in (("k12_per_min", "k21_per_min"), ("k13_per_min", "k31_per_min")):
            if (a in params) != (b in params):
                raise ModelDefinitionError(f"{pw}: {a} and {b} must be given together")
            if a in params:
                values[a] = _number(params, a, pw)
                values[b] = _number(params, b, pw)
        if "k13_per_min" in values and "k12_per_min" not in values:
            raise ModelDefinitionError(f"{pw}: k13_per_min needs k12_per_min")
    if "ke0_per_min" in params:
        values["ke0_per_min"] = _number(params, "ke0_per_min", pw)

    scaling = data.get("scaling", {})
    _check_keys(scaling, _SCALING_KEYS, f"{where} [scaling]")
    sw = f"{where} [scaling]"
    ref_w = (
        _number(scaling, "reference_weight_kg", sw) if "reference_weight_kg" in scaling else 70.0
    )
    vexp = (
        _number(scaling, "volume_exponent", sw, positive=False)
        if "volume_exponent" in scaling
        else 1.0
    )
    cexp = (
        _number(scaling, "clearance_exponent", sw, positive=False)
        if "clearance_exponent" in scaling
        else (0.0 if form == "micro" else 1.0)
    )
    if form == "micro" and scaling:
        raise ModelDefinitionError(
            f"{sw}: micro-constant models scale only through v1_l_per_kg; remove [scaling]"
        )

    covariates = data.get("covariates", {})
    _check_keys(covariates, _COVARIATE_KEYS, f"{where} [covariates]")
    cov = {
        k: _number(covariates, k, f"{where} [covariates]", positive=k != "cl_age_exponent")
        for k in covariates
    }

    metabolite = data.get("metabolite")
    if metabolite is not None:
        mw = f"{where} [metabolite]"
        _check_keys(metabolite, _METABOLITE_KEYS, mw)
        for key in ("v1_l", "cl_l_per_h"):
            _number(metabolite, key, mw)
        if ("v2_l" in metabolite) != ("q2_l_per_h" in metabolite):
            raise ModelDefinitionError(f"{mw}: v2_l and q2_l_per_h must be given together")
        if "fraction_formed" in metabolite:
            ff = _number(metabolite, "fraction_formed", mw)
            if ff > 1:
                raise ModelDefinitionError(f"{mw}: fraction_formed must be <= 1, got {ff}")
        mname = metabolite.get("name", "metabolite")
        if not isinstance(mname, str) or not _METABOLITE_NAME_RE.fullmatch(mname):
            raise ModelDefinitionError(
                f"{mw}: name must be lower-case letters, digits and '_' (it names output "
                f"columns, e.g. 'norketamine'), got {mname!r}"
            )
        scale_v = metabolite.get("scale_volume_with_weight", True)
        if not isinstance(scale_v, bool):
            raise ModelDefinitionError(f"{mw}: scale_volume_with_weight must be true or false")
        metabolite = {**metabolite, "name": mname}

    vt = data.get("validity", {})
    vw = f"{where} [validity]"
    _check_keys(vt, _VALIDITY_KEYS, vw)
    sexes = vt.get("sex")
    if sexes is not None and (
        not isinstance(sexes, list) or not set(sexes) <= {"male", "female"} or not sexes
    ):
        raise ModelDefinitionError(f"{vw}: sex must be a list of 'male'/'female'")
    validity = Validity(
        weight_kg=_range(vt, "weight_kg", vw),
        age_y=_range(vt, "age_y", vw),
        height_cm=_range(vt, "height_cm", vw),
        sex=tuple(sexes) if sexes else None,
        note=str(vt.get("note", "")),
        caution=str(vt.get("caution", "")),
    )

    var = data.get("variability", {})
    omega: dict[str, float] = {}
    corr: dict[tuple[str, str], float] = {}
    var_source = ""
    for key, value in var.items():
        if key == "source":
            var_source = str(value)
        elif key == "correlation":
            if not isinstance(value, dict):
                raise ModelDefinitionError(f"{where} [variability.correlation] must be a table")
            for pair, r in value.items():
                a, _, b = pair.partition(",")
                a, b = a.strip(), b.strip()
                if a not in VARIABLE_PARAMETERS or b not in VARIABLE_PARAMETERS:
                    raise ModelDefinitionError(
                        f"{where} [variability.correlation]: unknown pair {pair!r}"
                    )
                if not isinstance(r, int | float) or not -1 < r < 1:
                    raise ModelDefinitionError(
                        f"{where} [variability.correlation]: {pair} must be in (-1, 1)"
                    )
                corr[(a, b)] = float(r)
        elif key.startswith("omega_") and key[6:] in VARIABLE_PARAMETERS:
            omega[key[6:]] = _number(var, key, f"{where} [variability]", positive=False)
        else:
            raise ModelDefinitionError(
                f"{where} [variability]: unknown key {key!r}; use omega_<param> with param in "
                f"{', '.join(VARIABLE_PARAMETERS)}, 'correlation' or 'source'"
            )
    source = data.get("source", {})
    _check_keys(source, _SOURCE_KEYS, f"{where} [source]")
    model = Model(
        id=str(data.get("id", model_id)),
        name=name,
        drug=drug,
        enantiomer=enantiomer,
        form=form,
        values=values,
        v1_per_kg=v1_per_kg,
        reference_weight_kg=ref_w,
        volume_exponent=vexp,
        clearance_exponent=cexp,
        covariates=cov,
        metabolite=dict(metabolite) if metabolite is not None else None,
        validity=validity,
        variability=Variability(omega, corr, var_source),
        source={k: str(v) for k, v in source.items()},
        is_default=bool(data.get("default", False)),
    )
    _check_variability(model, where)
    return model


def _check_variability(model: Model, where: str) -> None:
    vw = f"{where} [variability]"
    allowed = model.variable_parameters
    for p, om in model.variability.omega.items():
        if p not in allowed:
            raise ModelDefinitionError(
                f"{vw}: omega_{p} does not apply to this model; choose from {', '.join(allowed)}"
            )
        if om < 0:
            raise ModelDefinitionError(f"{vw}: omega_{p} must be >= 0, got {om}")
    for a, b in model.variability.correlation:
        for p in (a, b):
            if p not in model.variability.omega:
                raise ModelDefinitionError(f"{vw}: correlation {a},{b} needs omega_{p} as well")
        if a == b:
            raise ModelDefinitionError(f"{vw}: correlation {a},{b} pairs a parameter with itself")
    if model.variability.correlation:
        cov = model.variability.covariance()
        if np.linalg.eigvalsh(cov).min() < -1e-12 * float(np.abs(cov).max()):
            raise ModelDefinitionError(
                f"{vw}: the correlations do not form a valid (positive semi-definite) matrix"
            )


def load_model_file(path: str | Path) -> Model:
    """Read and validate a model TOML file."""
    p = Path(path)
    data = read_toml(p, what="model file", error=ModelDefinitionError)
    return parse_model(data, model_id=p.stem, where=p.name)


def _model_files() -> dict[str, Any]:
    root = resources.files("ketaflow.pk") / "models"
    return {f.name[:-5]: f for f in root.iterdir() if f.name.endswith(".toml")}


def list_models() -> list[Model]:
    """Every model shipped in the library, default first, then by id."""
    models = []
    for model_id, f in sorted(_model_files().items()):
        data = tomllib.loads(f.read_text(encoding="utf-8"))
        models.append(parse_model(data, model_id=model_id, where=f.name))
    return sorted(models, key=lambda m: (not m.is_default, m.id))


def load_model(model_id: str) -> Model:
    """A shipped model by id (e.g. ``"kamp-2020"``), case-insensitive."""
    files = _model_files()
    key = model_id.strip().lower()
    if key not in files:
        known = ", ".join(sorted(files))
        raise ModelDefinitionError(f"unknown model {model_id!r}; choose one of {known}")
    data = tomllib.loads(files[key].read_text(encoding="utf-8"))
    return parse_model(data, model_id=key, where=files[key].name)


def default_model() -> Model:
    """The library's default model for adult outpatients."""
    defaults = [m for m in list_models() if m.is_default]
    if len(defaults) != 1:
        raise ModelDefinitionError("the model library must mark exactly one default model")
    return defaults[0]
