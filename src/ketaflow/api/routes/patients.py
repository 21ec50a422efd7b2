"""Patients under ``/api/v1/patients``.

Front desk registers patients and edits demographics; nurses and physicians read them and record
weights. Every read of a record is audited.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Query, status

from ketaflow.api.deps import MAX_ID, IdPath, PatientServiceDep, require
from ketaflow.api.schemas import (
    PatientCreate,
    PatientOut,
    PatientPageOut,
    PatientUpdate,
    WeightCreate,
    WeightOut,
)
from ketaflow.services.auth import Principal
from ketaflow.services.patients import (
    NAME_MAX_LENGTH,
    SEARCH_LIMIT_MAX,
    NewPatient,
    NewWeight,
    PatientChanges,
)
from ketaflow.store.types import Role

router = APIRouter(prefix="/patients", tags=["patients"])

#: Who may see patient records.
PATIENT_READERS: Final = (Role.FRONT_DESK, Role.NURSE, Role.PHYSICIAN)
#: Who may register patients and edit demographics.
DEMOGRAPHICS_EDITORS: Final = (Role.FRONT_DESK,)
#: Who may record clinical measurements such as weight.
MEASUREMENT_RECORDERS: Final = (Role.NURSE, Role.PHYSICIAN)

Reader = Annotated[Principal, require(*PATIENT_READERS)]
Editor = Annotated[Principal, require(*DEMOGRAPHICS_EDITORS)]
Recorder = Annotated[Principal, require(*MEASUREMENT_RECORDERS)]


@router.post("", response_model=PatientOut, status_code=status.HTTP_201_CREATED)
def create_patient(
    body: PatientCreate, principal: Editor, patients: PatientServiceDep
) -> PatientOut:
    """Register a patient."""
    view = patients.create(principal.actor, NewPatient(**body.model_dump()))
    return PatientOut.model_validate(view)


@router.get("", response_model=PatientPageOut)
def search_patients(
    principal: Reader,
    patients: PatientServiceDep,
    q: Annotated[
        str | None,
        Query(max_length=NAME_MAX_LENGTH, description="Start of the family or given name."),
    ] = None,
    mrn: Annotated[str | None, Query(max_length=32, description="Exact MRN.")] = None,
    limit: Annotated[int, Query(ge=1, le=SEARCH_LIMIT_MAX)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> PatientPageOut:
    """Search patients by name prefix and/or MRN (audited as a query)."""
    page = patients.search(principal.actor, name=q, mrn=mrn, limit=limit, offset=offset)
    return PatientPageOut.model_validate(page)


@router.get("/{patient_id}", response_model=PatientOut)
def get_patient(patient_id: IdPath, principal: Reader, patients: PatientServiceDep) -> PatientOut:
    """One patient's record (audited as a read)."""
    return PatientOut.model_validate(patients.get(principal.actor, patient_id))


@router.patch("/{patient_id}", response_model=PatientOut)
def update_patient(
    patient_id: IdPath, body: PatientUpdate, principal: Editor, patients: PatientServiceDep
) -> PatientOut:
    """Change demographics (the audit names the changed fields)."""
    changes = PatientChanges(**body.model_dump(exclude_unset=True))
    return PatientOut.model_validate(patients.update(principal.actor, patient_id, changes))


@router.get("/{patient_id}/weights", response_model=list[WeightOut])
def list_weights(
    patient_id: IdPath, principal: Reader, patients: PatientServiceDep
) -> list[WeightOut]:
    """Every recorded weight, oldest first (audited as a read)."""
    return [WeightOut.model_validate(w) for w in patients.weights(principal.actor, patient_id)]


@router.post("/{patient_id}/weights", response_model=WeightOut, status_code=status.HTTP_201_CREATED)
def add_weight(
    patient_id: IdPath, body: WeightCreate, principal: Recorder, patients: PatientServiceDep
) -> WeightOut:
    """Record a body weight (kg) measured on a given day."""
    view = patients.add_weight(
        principal.actor,
        patient_id,
        NewWeight(weight_kg=body.weight_kg, measured_on=body.measured_on),
        recorded_by_user_id=principal.user_id,
    )
    return WeightOut.model_validate(view)
