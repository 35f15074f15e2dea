"""Recovery: snapshot pins and files, rollback, replay, rehearsal, verification, the audit log
and the compensation report.
"""
