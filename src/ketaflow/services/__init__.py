"""Use-cases: clinic rules + storage + audit, one unit of work each.

Services take an open :class:`~ketaflow.store.uow.UnitOfWork` and never commit; the caller (an
API request, a CLI command) owns the transaction.
"""
