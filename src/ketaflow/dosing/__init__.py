"""Clinical dosing on top of :mod:`ketaflow.pk`: pure logic and TOML data, no I/O frameworks.

* :mod:`~ketaflow.dosing.body_size`: BMI, ideal/adjusted weight, lean body mass, BSA, and the
  dosing-weight policies with their explanation.
* :mod:`~ketaflow.dosing.orders`: :func:`~ketaflow.dosing.orders.create_order` builds an
  immutable, validated :class:`~ketaflow.dosing.orders.DoseOrder`.
* :mod:`~ketaflow.dosing.library`: the drug library (care areas, standard concentrations, soft
  and hard limits) and :func:`~ketaflow.dosing.library.check_order`.
* :mod:`~ketaflow.dosing.checks`: detection of the classic dosing errors.
* :mod:`~ketaflow.dosing.pump`: pump rate in mL/h, VTBI, dilution, independent double check.
* :mod:`~ketaflow.dosing.protocols`: treatment protocols as data files.
* :mod:`~ketaflow.dosing.titration`: between-session and in-session titration rules.

See ``docs/dosing.md``.
"""
