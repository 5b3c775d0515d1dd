"""The write side: every transaction the scorer and `cl` open is opened here.

- `unit_of_work`: the scoring transactions (a batch, the tenure sweep, a rescore chunk, a pin)
- `offsets`: partitions claimed, read back after a fence, reset when out of range
- `rules`: the rules in force and every version kept (SPEC §9.1)
- `replay`: members' applied records replayed under new rules (`cl rescore`)
- `erasure`: a member erased, and the late records of erased members (SPEC §9.4)
- `views`: the members' views written to Redis after a commit, and repaired from PostgreSQL
- `outbox`: level changes recorded, and taken by the relay under its lease
- `health`: what /readyz and the gauges read
- `sql/`: the SQL, one module per family of tables; each function runs in a transaction
  its caller here opened.
"""
