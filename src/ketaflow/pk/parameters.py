"""Frozen PK parameter sets, batched over patients (axis 0 = patient).

Internal units are mg, L and min: volumes in L, rate constants in 1/min. A parameter set for
N patients holds arrays of shape (N,); a single patient is N = 1. Build one with
:meth:`PKParameters.create` (micro-constants) or :meth:`PKParameters.from_clearances`
(clearances and volumes); both validate once, here, and everything downstream trusts them.

The structure is a mammillary model with 1 to 3 compartments, an optional effect compartment
(ke0) and an optional metabolite chain: a fraction of the parent's elimination (k10·A1) enters
the metabolite's central compartment, which has its own elimination and an optional peripheral
compartment. State vector layout (see :meth:`PKParameters.state_names`)::

    [A1, A2?, A3?, Ce?, M1?, M2?]   amounts in mg, Ce in mg/L
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ketaflow.errors import ModelDefinitionError

FloatArray = npt.NDArray[np.float64]


def _as_array(name: str, value: npt.ArrayLike, n: int | None, *, allow_zero: bool) -> FloatArray:
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1:
        raise ModelDefinitionError(f"{name} must be a scalar or a 1-D array, got shape {arr.shape}")
    if n is not None and arr.shape[0] == 1 and n > 1:
        arr = np.repeat(arr, n)
    if n is not None and arr.shape[0] != n:
        raise ModelDefinitionError(f"{name} has {arr.shape[0]} values but there are {n} patients")
    if not np.all(np.isfinite(arr)):
        raise ModelDefinitionError(f"{name} must be finite, got {arr[~np.isfinite(arr)][0]}")
    bad = arr < 0 if allow_zero else arr <= 0
    if np.any(bad):
        rule = ">= 0" if allow_zero else "> 0"
        raise ModelDefinitionError(f"{name} must be {rule}, got {arr[bad][0]}")
    return arr


def _batch_size(values: dict[str, npt.ArrayLike | None]) -> int:
    sizes = {np.atleast_1d(np.asarray(v)).shape[0] for v in values.values() if v is not None}
    sizes.discard(1)
    if len(sizes) > 1:
        raise ModelDefinitionError(f"parameter arrays have different lengths: {sorted(sizes)}")
    return sizes.pop() if sizes else 1


@dataclass(frozen=True, slots=True)
class MetaboliteParameters:
    """A metabolite fed by the parent's elimination.

    ``fraction_formed`` is the fraction of parent elimination that becomes metabolite (mass
    units; an apparent value when the published model estimates CL/Fm and V/Fm).
    """

    name: str
    fraction_formed: FloatArray
    v1_l: FloatArray
    k10_per_min: FloatArray
    k12_per_min: FloatArray
    k21_per_min: FloatArray
    n_compartments: int

    @property
    def n_patients(self) -> int:
        """Number of patients."""
        return int(self.v1_l.shape[0])


@dataclass(frozen=True, slots=True)
class PKParameters:
    """Micro-constants of a linear mammillary model for N patients (1/min, L)."""

    v1_l: FloatArray
    k10_per_min: FloatArray
    k12_per_min: FloatArray
    k21_per_min: FloatArray
    k13_per_min: FloatArray
    k31_per_min: FloatArray
    ke0_per_min: FloatArray | None
    n_compartments: int
    metabolite: MetaboliteParameters | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        *,
        v1_l: npt.ArrayLike,
        k10_per_min: npt.ArrayLike,
        k12_per_min: npt.ArrayLike | None = None,
        k21_per_min: npt.ArrayLike | None = None,
        k13_per_min: npt.ArrayLike | None = None,
        k31_per_min: npt.ArrayLike | None = None,
        ke0_per_min: npt.ArrayLike | None = None,
        metabolite: MetaboliteParameters | None = None,
    ) -> PKParameters:
        """Validate micro-constants (scalars or arrays of one length) into a parameter set.

        A second compartment needs both k12 and k21, a third both k13 and k31.
        """
        values = {
            "v1_l": v1_l,
            "k10_per_min": k10_per_min,
            "k12_per_min": k12_per_min,
            "k21_per_min": k21_per_min,
            "k13_per_min": k13_per_min,
            "k31_per_min": k31_per_min,
            "ke0_per_min": ke0_per_min,
        }
        n = _batch_size(values)
        if metabolite is not None and metabolite.n_patients not in (1, n):
            raise ModelDefinitionError(
                f"metabolite parameters have {metabolite.n_patients} patients, parent has {n}"
            )
        for a, b in (("k12_per_min", "k21_per_min"), ("k13_per_min", "k31_per_min")):
            if (values[a] is None) != (values[b] is None):
                raise ModelDefinitionError(f"{a} and {b} must be given together")
        if values["k13_per_min"] is not None and values["k12_per_min"] is None:
            raise ModelDefinitionError("a third compartment (k13, k31) needs a second (k12, k21)")
        n_cmt = 1 + (k12_per_min is not None) + (k13_per_min is not None)
        zero = np.zeros(n)

        def arr(name: str, *, allow_zero: bool = False) -> FloatArray:
            v = values[name]
            return zero.copy() if v is None else _as_array(name, v, n, allow_zero=allow_zero)

        met = metabolite
        if met is not None and met.n_patients == 1 and n > 1:
            met = dataclasses.replace(
                met,
                fraction_formed=np.repeat(met.fraction_formed, n),
                v1_l=np.repeat(met.v1_l, n),
                k10_per_min=np.repeat(met.k10_per_min, n),
                k12_per_min=np.repeat(met.k12_per_min, n),
                k21_per_min=np.repeat(met.k21_per_min, n),
            )
        return cls(
            v1_l=arr("v1_l"),
            k10_per_min=arr("k10_per_min"),
            k12_per_min=arr("k12_per_min"),
            k21_per_min=arr("k21_per_min"),
            k13_per_min=arr("k13_per_min"),
            k31_per_min=arr("k31_per_min"),
            ke0_per_min=None if ke0_per_min is None else arr("ke0_per_min"),
            n_compartments=n_cmt,
            metabolite=met,
        )

    @classmethod
    def from_clearances(
        cls,
        *,
        v1_l: npt.ArrayLike,
        cl_l_per_min: npt.ArrayLike,
        v2_l: npt.ArrayLike | None = None,
        q2_l_per_min: npt.ArrayLike | None = None,
        v3_l: npt.ArrayLike | None = None,
        q3_l_per_min: npt.ArrayLike | None = None,
        ke0_per_min: npt.ArrayLike | None = None,
        metabolite: MetaboliteParameters | None = None,
    ) -> PKParameters:
        """Build from clearances (L/min) and volumes (L): k10 = CL/V1, k12 = Q2/V1, ..."""
        for a, b in (("v2_l", "q2_l_per_min"), ("v3_l", "q3_l_per_min")):
            if (locals()[a] is None) != (locals()[b] is None):
                raise ModelDefinitionError(f"{a} and {b} must be given together")
        n = _batch_size(
            {
                "v1": v1_l,
                "cl": cl_l_per_min,
                "v2": v2_l,
                "q2": q2_l_per_min,
                "v3": v3_l,
                "q3": q3_l_per_min,
            }
        )
        v1 = _as_array("v1_l", v1_l, n, allow_zero=False)
        cl = _as_array("cl_l_per_min", cl_l_per_min, n, allow_zero=False)
        kw: dict[str, npt.ArrayLike | None] = {}
        if v2_l is not None and q2_l_per_min is not None:
            v2 = _as_array("v2_l", v2_l, n, allow_zero=False)
            q2 = _as_array("q2_l_per_min", q2_l_per_min, n, allow_zero=False)
            kw.update(k12_per_min=q2 / v1, k21_per_min=q2 / v2)
        if v3_l is not None and q3_l_per_min is not None:
            v3 = _as_array("v3_l", v3_l, n, allow_zero=False)
            q3 = _as_array("q3_l_per_min", q3_l_per_min, n, allow_zero=False)
            kw.update(k13_per_min=q3 / v1, k31_per_min=q3 / v3)
        return cls.create(
            v1_l=v1, k10_per_min=cl / v1, ke0_per_min=ke0_per_min, metabolite=metabolite, **kw
        )

    def replace(self, **changes: Any) -> PKParameters:
        """A copy with some micro-constants changed, validated again."""
        current: dict[str, Any] = {
            "v1_l": self.v1_l,
            "k10_per_min": self.k10_per_min,
            "ke0_per_min": self.ke0_per_min,
            "metabolite": self.metabolite,
        }
        if self.n_compartments >= 2:
            current.update(k12_per_min=self.k12_per_min, k21_per_min=self.k21_per_min)
        if self.n_compartments >= 3:
            current.update(k13_per_min=self.k13_per_min, k31_per_min=self.k31_per_min)
        current.update(changes)
        return PKParameters.create(**current)

    # --- shape and derived quantities --------------------------------------------------------

    @property
    def n_patients(self) -> int:
        """Number of patients (length of axis 0)."""
        return int(self.v1_l.shape[0])

    @property
    def has_effect_site(self) -> bool:
        """Whether an effect compartment (ke0) is modelled."""
        return self.ke0_per_min is not None

    def state_names(self) -> list[str]:
        """Names of the state vector's entries, in order."""
        names = ["A1", "A2", "A3"][: self.n_compartments]
        if self.has_effect_site:
            names.append("Ce")
        if self.metabolite is not None:
            names += ["M1", "M2"][: self.metabolite.n_compartments]
        return names

    def index(self, name: str) -> int:
        """Position of state ``name`` in the state vector."""
        return self.state_names().index(name)

    def take(self, idx: npt.ArrayLike | slice) -> PKParameters:
        """The parameter sets of the patients selected by ``idx`` (index array or slice)."""
        sel: npt.NDArray[np.intp] | slice = idx if isinstance(idx, slice) else np.asarray(idx)

        def pick(a: FloatArray) -> FloatArray:
            return np.atleast_1d(a[sel])

        met = self.metabolite
        if met is not None:
            met = dataclasses.replace(
                met,
                fraction_formed=pick(met.fraction_formed),
                v1_l=pick(met.v1_l),
                k10_per_min=pick(met.k10_per_min),
                k12_per_min=pick(met.k12_per_min),
                k21_per_min=pick(met.k21_per_min),
            )
        return dataclasses.replace(
            self,
            v1_l=pick(self.v1_l),
            k10_per_min=pick(self.k10_per_min),
            k12_per_min=pick(self.k12_per_min),
            k21_per_min=pick(self.k21_per_min),
            k13_per_min=pick(self.k13_per_min),
            k31_per_min=pick(self.k31_per_min),
            ke0_per_min=None if self.ke0_per_min is None else pick(self.ke0_per_min),
            metabolite=met,
        )

    @property
    def cl_l_per_min(self) -> FloatArray:
        """Elimination clearance, L/min."""
        return self.v1_l * self.k10_per_min

    @property
    def vss_l(self) -> FloatArray:
        """Volume of distribution at steady state, L."""
        v = self.v1_l.copy()
        if self.n_compartments >= 2:
            v += self.v1_l * self.k12_per_min / self.k21_per_min
        if self.n_compartments >= 3:
            v += self.v1_l * self.k13_per_min / self.k31_per_min
        return v

    def system_matrix(self) -> FloatArray:
        """The matrix A of dx/dt = A·x + b·R, shape (N, k, k) (1/min); input b enters A1."""
        names = self.state_names()
        k = len(names)
        n = self.n_patients
        a = np.zeros((n, k, k))
        a[:, 0, 0] = -(self.k10_per_min + self.k12_per_min + self.k13_per_min)
        if self.n_compartments >= 2:
            a[:, 0, 1] = self.k21_per_min
            a[:, 1, 0] = self.k12_per_min
            a[:, 1, 1] = -self.k21_per_min
        if self.n_compartments >= 3:
            a[:, 0, 2] = self.k31_per_min
            a[:, 2, 0] = self.k13_per_min
            a[:, 2, 2] = -self.k31_per_min
        if self.ke0_per_min is not None:
            e = names.index("Ce")
            a[:, e, 0] = self.ke0_per_min / self.v1_l
            a[:, e, e] = -self.ke0_per_min
        met = self.metabolite
        if met is not None:
            m1 = names.index("M1")
            a[:, m1, 0] = met.fraction_formed * self.k10_per_min
            a[:, m1, m1] = -(met.k10_per_min + met.k12_per_min)
            if met.n_compartments >= 2:
                m2 = names.index("M2")
                a[:, m1, m2] = met.k21_per_min
                a[:, m2, m1] = met.k12_per_min
                a[:, m2, m2] = -met.k21_per_min
        return a
