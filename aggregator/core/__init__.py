"""The pure core: events, buckets, partial aggregates, sketches, the rolling window,
snapshots and the leader-election decision.  Nothing here does I/O or knows a clock;
time always comes in as an argument."""
