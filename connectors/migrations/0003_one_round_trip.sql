-- Admission and commit as one statement each (connectors/src/state/postgres.rs):
-- the serving session admits deliveries one after another, so every round
-- trip there costs intake throughput. Each function is the same sequence
-- of statements the node would otherwise send, in one transaction.

-- A tenant's delivered milliseconds per month, kept by the commits so an
-- admission reads a few rows instead of summing the month's ledger (which
-- grows with every job). Sixteen rows per tenant and month, a commit adding
-- to the one its job id hashes to: concurrent commits of one tenant rarely
-- wait on the same row. Always equal to the ledger's sums.
CREATE TABLE quota_usage (
    tenant  text     NOT NULL,
    month   text     NOT NULL,
    shard   smallint NOT NULL,
    used_ms bigint   NOT NULL,
    PRIMARY KEY (tenant, month, shard)
);
INSERT INTO quota_usage (tenant, month, shard, used_ms)
SELECT tenant, month, (abs(hashtext(job_id)) % 16)::smallint, sum(billed_ms)
  FROM ledger GROUP BY 1, 2, 3;

-- A delivery's admission: its record (already finished?), its lease (run
-- elsewhere?), its tenant's counted limits (under the tenant's advisory
-- lock) and its attempt count. `verdict` is one of: finished (record is
-- set), leased (holder is set), concurrent / monthly (refused: running,
-- reserved and used say why), run (runs is the count before this one).
--
-- Its transaction commits asynchronously (synchronous_commit off, for this
-- transaction only): admissions come one at a time from a node's session,
-- and waiting for each WAL flush would bound a node's intake by the disk.
-- What a database crash may lose is the last fraction of a second of
-- admissions (never a record or a charge, whose commit stays synchronous):
-- a lost lease lets another node run the job too (the record's primary key
-- still lets one commit stand), a lost reservation lets a tenant over-admit
-- just after the crash, a lost attempt allows one more retry.
CREATE FUNCTION vidflow_admit(
    p_tenant text, p_job text, p_node text, p_lease_s float8,
    p_month text, p_ms bigint, p_max_concurrent bigint, p_limit_ms bigint,
    p_reservation_s float8, p_lock integer)
RETURNS TABLE (verdict text, record text, holder text,
               running bigint, reserved bigint, used bigint, runs integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_node text;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    running := 0; reserved := 0; used := 0; runs := 0;
    SELECT r.record::text INTO record
      FROM job_records r WHERE r.tenant = p_tenant AND r.job_id = p_job;
    IF record IS NOT NULL THEN
        verdict := 'finished'; RETURN NEXT; RETURN;
    END IF;
    INSERT INTO job_leases AS l (tenant, job_id, node, expires_at)
    VALUES (p_tenant, p_job, p_node, now() + make_interval(secs => p_lease_s))
    ON CONFLICT (tenant, job_id) DO UPDATE
       SET node = EXCLUDED.node, expires_at = EXCLUDED.expires_at
     WHERE l.node = EXCLUDED.node OR l.expires_at < now()
    RETURNING l.node INTO v_node;
    IF v_node IS NULL THEN
        SELECT l.node INTO holder
          FROM job_leases l WHERE l.tenant = p_tenant AND l.job_id = p_job;
        verdict := 'leased'; RETURN NEXT; RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(p_lock, hashtext(p_tenant));
    UPDATE quota_reservations q SET touched_at = now(), node = p_node
     WHERE q.tenant = p_tenant AND q.job_id = p_job;
    IF NOT FOUND THEN
        DELETE FROM quota_reservations q
         WHERE q.tenant = p_tenant
           AND q.touched_at < now() - make_interval(secs => p_reservation_s);
        SELECT count(*), coalesce(sum(q.ms), 0)::bigint INTO running, reserved
          FROM quota_reservations q WHERE q.tenant = p_tenant;
        IF running >= p_max_concurrent THEN
            DELETE FROM job_leases l
             WHERE l.tenant = p_tenant AND l.job_id = p_job AND l.node = p_node;
            verdict := 'concurrent'; RETURN NEXT; RETURN;
        END IF;
        SELECT coalesce(sum(u.used_ms), 0)::bigint INTO used
          FROM quota_usage u WHERE u.tenant = p_tenant AND u.month = p_month;
        IF used + reserved + p_ms > p_limit_ms THEN
            DELETE FROM job_leases l
             WHERE l.tenant = p_tenant AND l.job_id = p_job AND l.node = p_node;
            verdict := 'monthly'; RETURN NEXT; RETURN;
        END IF;
        INSERT INTO quota_reservations (tenant, job_id, month, ms, node)
        VALUES (p_tenant, p_job, p_month, p_ms, p_node);
    END IF;
    INSERT INTO job_attempts AS a (tenant, job_id, runs) VALUES (p_tenant, p_job, 1)
    ON CONFLICT (tenant, job_id) DO UPDATE SET runs = a.runs + 1
    RETURNING a.runs - 1 INTO runs;
    verdict := 'run'; RETURN NEXT;
END $$;

-- A finished job's commit: its record (the first commit of (tenant, job)
-- wins), its charge (and the month's usage), its reserved seconds moved to
-- the ledger, its attempt
-- count and this node's lease ended. Returns the record that stands and
-- whether this commit made it.
CREATE FUNCTION vidflow_commit(
    p_tenant text, p_job text, p_status text, p_node text, p_finished_ms bigint,
    p_record text, p_month text, p_billed_ms bigint, p_amount_micro bigint,
    p_ts_ms bigint, p_commit_id text)
RETURNS TABLE (record text, first boolean)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_records (tenant, job_id, status, node, finished_ms, record)
    VALUES (p_tenant, p_job, p_status, p_node, p_finished_ms, p_record::json)
    ON CONFLICT (tenant, job_id) DO NOTHING;
    IF FOUND THEN
        IF p_billed_ms IS NOT NULL THEN
            INSERT INTO ledger (tenant, job_id, month, billed_ms, amount_micro, ts_ms, commit_id)
            VALUES (p_tenant, p_job, p_month, p_billed_ms, p_amount_micro, p_ts_ms, p_commit_id);
            INSERT INTO quota_usage AS u (tenant, month, shard, used_ms)
            VALUES (p_tenant, p_month, (abs(hashtext(p_job)) % 16)::smallint, p_billed_ms)
            ON CONFLICT (tenant, month, shard) DO UPDATE SET used_ms = u.used_ms + EXCLUDED.used_ms;
        END IF;
        UPDATE quota_reservations q SET ms = 0
         WHERE q.tenant = p_tenant AND q.job_id = p_job;
        record := p_record; first := true;
    ELSE
        SELECT r.record::text INTO record
          FROM job_records r WHERE r.tenant = p_tenant AND r.job_id = p_job;
        first := false;
    END IF;
    DELETE FROM job_attempts a WHERE a.tenant = p_tenant AND a.job_id = p_job;
    DELETE FROM job_leases l WHERE l.tenant = p_tenant AND l.job_id = p_job AND l.node = p_node;
    RETURN NEXT;
END $$;
