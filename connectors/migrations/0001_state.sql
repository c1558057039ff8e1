-- The shared state of a vidflow fleet (connectors/src/state/postgres.rs).
-- Applied once, in order, by whichever node starts first (under an
-- advisory lock); `schema_migrations` remembers what was applied.

-- A finished job's record: the first commit of (tenant, job_id) wins, by
-- the primary key, however many nodes ran it.
CREATE TABLE job_records (
    tenant      text   NOT NULL,
    job_id      text   NOT NULL,
    status      text   NOT NULL,
    -- The node whose commit won: it alone writes the job's analytics rows.
    node        text   NOT NULL,
    finished_ms bigint NOT NULL,
    -- json, not jsonb: kept as written (checked, not decomposed), which
    -- costs the commit less; nothing queries inside it on the hot path.
    record      json   NOT NULL,
    PRIMARY KEY (tenant, job_id)
);
CREATE INDEX job_records_node ON job_records (node, finished_ms);

-- One charge per delivered job, written in the record's transaction.
CREATE TABLE ledger (
    tenant       text   NOT NULL,
    job_id       text   NOT NULL,
    month        text   NOT NULL,  -- yyyy-mm (UTC) of ts_ms
    billed_ms    bigint NOT NULL CHECK (billed_ms >= 0),
    amount_micro bigint NOT NULL,
    ts_ms        bigint NOT NULL,
    commit_id    text   NOT NULL,
    PRIMARY KEY (tenant, job_id),
    FOREIGN KEY (tenant, job_id) REFERENCES job_records (tenant, job_id)
);
CREATE INDEX ledger_month ON ledger (tenant, month);

-- Started runs of a job that has no record yet (poison detection).
CREATE TABLE job_attempts (
    tenant text    NOT NULL,
    job_id text    NOT NULL,
    runs   integer NOT NULL CHECK (runs >= 0),
    PRIMARY KEY (tenant, job_id)
);

-- Admitted, unfinished jobs and the seconds each holds of its tenant's
-- month. A reservation lapses once nobody has vouched for it (a running
-- job's lease heartbeat touches it) for the reservation TTL.
CREATE TABLE quota_reservations (
    tenant     text        NOT NULL,
    job_id     text        NOT NULL,
    month      text        NOT NULL,
    ms         bigint      NOT NULL CHECK (ms >= 0),
    node       text        NOT NULL,
    touched_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, job_id)
);

-- Who runs a job now. Expiry is judged by the database's clock, so nodes'
-- clocks need not agree.
CREATE TABLE job_leases (
    tenant     text        NOT NULL,
    job_id     text        NOT NULL,
    node       text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, job_id)
);
CREATE INDEX job_leases_node ON job_leases (node);
