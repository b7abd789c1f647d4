"""``benchmarks/stream_throughput.py``: stream worker throughput per publishing form.

One run, one broker (the configured one, else an embedded Tansu broker), one set of generated
contest events (event times of the last minutes), measured per *form* (``--form``) in which hubs
publish them to ``contest.events``:

- ``single``: one event per record, keyed by hubId (what log shippers send: the contract form);
- ``envelope``: publisher envelopes, one per hub every ``flush_every`` events (as
  :class:`producers.publisher.ContestPublisher` sends them).

Per form (modules: :mod:`.forms` the events and their forms, :mod:`.throughput` the whole-path
run, :mod:`.baselines` the aiokafka ceiling and the faust baseline (:mod:`.faust_app`),
:mod:`.live` the live ladder, :mod:`.report` targets and table, :mod:`.cli` flags and the run):

- ``events_per_s``: the whole path: the worker command as deployed (``python -m streams worker``,
  ``CT_WORKER_SOURCE=ingested``, ``CT_WORKER_INGEST=child``: it starts the ingest stage as a child
  process). The worker and its ingest child are started on empty topics and waited for (the ingest
  group committed past one warm-up record that is not an event, per partition; the worker's
  exporter reports a lag for every partition of the ingested topic), then the records are
  published: from the first publish to the worker's report that the N-th event was applied
  (``CT_WORKER_BENCH_EXPECT_EVENTS``). ``worker_timed_events_per_s`` is the worker's own span (its
  first applied event to the N-th), ``publish_events_per_s`` how fast the records went out;
- ``ceiling_events_per_s``: a plain aiokafka consumer, ``getmany`` +
  :func:`streams.fastdecode.decode_events` of the same records (validation included, no state),
  the fastest of three reads;
- ``faust_events_per_s``: the idiomatic faust loop: one event per record, ``async for value in
  stream`` + ``json.loads`` + one update of a tumbling windowed table per event, on the
  single-event records of the same events (at most ``--baseline-events``: it is slow). Run once;
  the envelope form is compared with the same figure (the baseline reads single-event records);
- ``vs_ceiling``, ``vs_faust``: ratios, printed beside their targets;
- ``changelog_bytes_per_event``: key + value bytes of every record the throughput run wrote to the
  worker's changelog topic (``<app_id>-state-changelog``, read from its start to its end offsets;
  a tombstone counts its key) over the events; for the single form also over the mean size (key +
  value) of one event record (``changelog_vs_event_size``);
- ``worker_peak_rss_mb``, ``ingest_peak_rss_mb``: VmHWM of the worker and of its ingest child,
  from /proc when the worker's report arrives (null when it cannot be read). The report's own
  ``rss_peak_kb`` (``ru_maxrss``, kept as ``worker_ru_maxrss_mb``) is not used: Linux carries the
  peak RSS of the forked parent (this benchmark, holding every generated record) across exec;
- ``max_sustainable_events_per_s``: a live worker (1 s windows, 0.2 s grace, events stamped with
  the wall clock when published) gets phases of ``--step-s`` seconds at 1k, 2k, 4k, ... events/s
  (the single form one record per event, the envelope form one envelope per hub every 20 ms); a
  step passes when its publish-to-window freshness p99 is <= 1 s and the publisher reached the
  rate. Freshness of a window: from its close point (its end plus the grace: when its last event
  was published) until its result is read from ``contest.windows``; a step counts the windows
  (every hub) that open and close inside it, and one with no result 1.5 s after the step is later
  than any limit. The ladder stops at the first failing step; the last passing rate is the
  maximum (when the first step fails: halving, twice at most, each after the worker caught up).
  Then, once the worker caught up again, one phase at 80% of it: ``freshness_p99_at_80pct_ms``.
  ``live_events_per_ingested_record`` and ``live_changelog_bytes_per_event`` say how the live
  traffic reached the worker (the throughput run sees large ingested records, live traffic small).

Events lost on the way (the worker read everything ingested but applied fewer events than were
published: ``LostEventsError``) are reported in ``lost_events`` and the measurement is repeated once
on fresh topics. The faust baseline starts with the first worker (their start-ups overlap; the
baseline finishes before that worker is measured). Bounded: the default ``--form both`` run takes
about 4 minutes on Tansu (faust joins a group there in ~30 s, four workers), 2.5 on Apache Kafka.
``CT_BENCH_WORKER_LOGLEVEL=info`` keeps the workers' (and ingest children's) logs in the run's
temporary directory verbose.
"""
