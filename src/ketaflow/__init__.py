"""ketaflow: clinical decision support for medically supervised ketamine infusion therapy.

For supervised clinical settings only; never for unsupervised or recreational use.
"""

__version__ = "0.1.0"
