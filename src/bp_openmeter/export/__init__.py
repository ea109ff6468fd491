"""`bp-openmeter export`: the stored events, streamed to another OpenMeter-v1 ingest endpoint.

For moving history off this engine (the backend switch to ClickHouse: docs/switching-backend.md) or into another engine. Each event goes as the CloudEvent it came as:
original id, source, type, subject, time, data and extension attributes, so an endpoint
that deduplicates on (source, id) counts each once however often it is sent.

    command.py     arguments, the run, its summary and exit code
    run.py         one run: lock, checkpoint, passes up to the horizon, progress
    source.py      reading events by sequence ranges; the horizon of a pass
    checkpoint.py  the resumable position (a row in the source database)
    target.py      HTTP to the ingest endpoint, retries with backoff
    delivery.py    what the target's answers mean for a batch
    drain.py       waiting until the sink has stored what JetStream holds
    verify.py      --verify: the source's and the target's meters compared
"""
