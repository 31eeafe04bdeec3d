-- The fleet-scale reconciliation of verify-tier (docs/SCALING.md, docs/INDEX.md).
--
-- ONE source for every engine: written in DuckDB's dialect, rendered per engine by
-- pipeline.verify.sql (sqlglot), and tested to parse as Trino/Athena SQL.  Each statement
-- starts with a "-- name: <name>" line.  $placeholders are substituted with validated
-- literals before rendering.  Tables: $inventory (S3 Inventory, Parquet, the documented AWS
-- schema, IncludedObjectVersions = All) and $index (the manifest index parts).
--
-- Every finding statement returns the same columns:
--   code, stream, segment, key, seq, a, b, detail
-- (a, b: numbers the message quotes, e.g. the object size and the uploaded size).

-- name: objects
-- Per index row: exactly once, same bytes, locked; from the object's versions in the inventory.
-- One aggregation over the report, one join, materialised once (MATERIALIZED is DuckDB's
-- hint; the Trino rendering drops it and lets the engine plan).
WITH per_key AS (
    SELECT key,
           SUM(CASE WHEN COALESCE(is_delete_marker, FALSE) THEN 0 ELSE 1 END) AS n_versions,
           SUM(CASE WHEN COALESCE(is_delete_marker, FALSE) THEN 1 ELSE 0 END) AS n_markers,
           MAX(key) FILTER (WHERE is_latest AND NOT COALESCE(is_delete_marker, FALSE)) AS latest_key,
           MAX(size) FILTER (WHERE is_latest AND NOT COALESCE(is_delete_marker, FALSE)) AS size,
           MAX(last_modified_date) FILTER (WHERE is_latest AND NOT COALESCE(is_delete_marker, FALSE)) AS last_modified,
           MAX(e_tag) FILTER (WHERE is_latest AND NOT COALESCE(is_delete_marker, FALSE)) AS e_tag,
           MAX(object_lock_mode) FILTER (WHERE is_latest AND NOT COALESCE(is_delete_marker, FALSE)) AS object_lock_mode,
           MAX(object_lock_retain_until_date) FILTER (WHERE is_latest AND NOT COALESCE(is_delete_marker, FALSE))
               AS retain_until,
           -- the first version is the one the shipper stored (create-only): later ones are PUTs over it
           arg_min(e_tag, last_modified_date) FILTER (WHERE NOT COALESCE(is_delete_marker, FALSE)) AS original_e_tag,
           -- versions PUT within one Last-Modified tick tie, and arg_min may then pick the
           -- newest: different contents under one key prove a replacement whatever the order
           COUNT(DISTINCT e_tag) FILTER (WHERE NOT COALESCE(is_delete_marker, FALSE)) AS n_contents
    FROM $inventory
    WHERE bucket = $bucket AND starts_with(key, $prefix)
    GROUP BY key
), j AS MATERIALIZED (
    SELECT i.stream, i.segment, i.key, i.first_seq, i.stored_size, i.stored_md5,
           p.n_versions, p.n_markers, p.latest_key, p.size, p.last_modified, p.e_tag,
           p.object_lock_mode, p.retain_until, p.original_e_tag, p.n_contents
    FROM $index i
    LEFT JOIN per_key p ON p.key = i.key
    WHERE i.confirmed_at <= $inventory_time AND $stream_filter
)
SELECT 'missing-object' AS code, stream, segment, key, first_seq AS seq, CAST(NULL AS BIGINT) AS a,
       CAST(NULL AS BIGINT) AS b, CAST(NULL AS VARCHAR) AS detail
FROM j WHERE latest_key IS NULL
UNION ALL
SELECT 'delete-marker', stream, segment, key, first_seq, n_markers, CAST(NULL AS BIGINT),
       CASE WHEN latest_key IS NULL THEN 'hides' ELSE 'under' END
FROM j WHERE n_markers > 0
UNION ALL
SELECT 'extra-version', stream, segment, key, first_seq, n_versions, CAST(NULL AS BIGINT), CAST(NULL AS VARCHAR)
FROM j WHERE n_versions > 1
UNION ALL
SELECT 'appended-bytes', stream, segment, key, first_seq, size, stored_size, CAST(NULL AS VARCHAR)
FROM j WHERE latest_key IS NOT NULL AND size > stored_size
UNION ALL
SELECT 'truncated-object', stream, segment, key, first_seq, size, stored_size, CAST(NULL AS VARCHAR)
FROM j WHERE latest_key IS NOT NULL AND size < stored_size
UNION ALL
SELECT 'object-replaced', stream, segment, key, first_seq, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), e_tag
FROM j WHERE latest_key IS NOT NULL AND size = stored_size
     AND ((original_e_tag IS NOT NULL AND e_tag <> original_e_tag) OR n_contents > 1
          OR (stored_md5 IS NOT NULL AND length(e_tag) = 32 AND lower(e_tag) <> lower(stored_md5)))
UNION ALL
SELECT 'not-locked', stream, segment, key, first_seq, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),
       COALESCE(object_lock_mode, 'none')
FROM j WHERE latest_key IS NOT NULL AND $check_locks AND COALESCE(upper(object_lock_mode), '') <> 'COMPLIANCE'
UNION ALL
SELECT 'retention-too-short', stream, segment, key, first_seq, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),
       CAST(retain_until AS VARCHAR)
FROM j WHERE latest_key IS NOT NULL AND $check_locks AND upper(object_lock_mode) = 'COMPLIANCE'
     AND (retain_until IS NULL OR retain_until < last_modified + INTERVAL $retention_days DAY - INTERVAL 1 DAY)
UNION ALL
SELECT 'expiring-soon', stream, segment, key, first_seq, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),
       CAST(retain_until AS VARCHAR)
FROM j WHERE latest_key IS NOT NULL AND upper(object_lock_mode) = 'COMPLIANCE'
     AND retain_until >= last_modified + INTERVAL $retention_days DAY - INTERVAL 1 DAY
     AND retain_until < $now + INTERVAL $expiry_warning_days DAY
UNION ALL
SELECT 'renamed-object', stream, segment, key, first_seq, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),
       CAST(NULL AS VARCHAR)
FROM j WHERE key <> $prefix || stream || '/' || segment AND key <> $prefix || stream || '/' || segment || '.zst';

-- name: strays
-- Inventory keys under the prefix that no index row explains (the anti-join first: the
-- patterns run only on what is left, normally nothing).
WITH unmatched AS MATERIALIZED (
    SELECT v.key, v.last_modified_date AS last_modified
    FROM $inventory v
    LEFT JOIN $index i ON i.key = v.key
    WHERE v.bucket = $bucket AND starts_with(v.key, $prefix) AND v.is_latest
      AND NOT COALESCE(v.is_delete_marker, FALSE) AND NOT starts_with(v.key, $prefix || '_index/') AND i.key IS NULL
), parsed AS (
    SELECT key, last_modified,
           regexp_extract(key, '^' || $prefix_re || '([^/]+)/(seg-[0-9]{20}(\.[1-9][0-9]{0,5})?\.jsonl)(\.zst)?$$', 1)
               AS stream,
           regexp_extract(key, '^' || $prefix_re || '([^/]+)/(seg-[0-9]{20}(\.[1-9][0-9]{0,5})?\.jsonl)(\.zst)?$$', 2)
               AS segment,
           regexp_extract(key, '^' || $prefix_re || '([^/]+)/[^/]+$$', 1) AS parent,
           regexp_extract(key, '([^/]*)$$', 1) AS base
    FROM unmatched
), streams AS MATERIALIZED (
    SELECT stream, MAX(confirmed_at) AS indexed_until, MAX(last_seq) AS indexed_seq FROM $index GROUP BY stream
)
SELECT CASE WHEN s.stream IS NOT NULL
             AND (p.base LIKE 'seg-%' OR p.base LIKE '%.jsonl' OR p.base LIKE '%.zst')
            THEN 'unexpected-segment-object' ELSE 'unexpected-object' END AS code,
       COALESCE(s.stream, '') AS stream, '' AS segment, p.key, CAST(NULL AS BIGINT) AS seq,
       CAST(NULL AS BIGINT) AS a, CAST(NULL AS BIGINT) AS b, CAST(NULL AS VARCHAR) AS detail
FROM parsed p LEFT JOIN streams s ON s.stream = p.parent
WHERE COALESCE(p.segment, '') = ''
UNION ALL
SELECT 'unshipped-object', p.stream, p.segment, p.key, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),
       CAST(NULL AS BIGINT), CAST(NULL AS VARCHAR)
FROM parsed p JOIN streams s ON s.stream = p.stream
-- not yet indexed is legitimate only for an object newer than the index AND past its seqs
WHERE COALESCE(p.segment, '') <> ''
  AND (p.last_modified <= s.indexed_until OR CAST(substr(p.segment, 5, 20) AS BIGINT) <= s.indexed_seq);

-- name: index_objects
-- The index parts' own objects: one version, locked like the segments.
WITH inv AS (
    SELECT key, is_latest, COALESCE(is_delete_marker, FALSE) AS is_delete_marker, last_modified_date AS last_modified,
           object_lock_mode, object_lock_retain_until_date AS retain_until
    FROM $inventory
    WHERE bucket = $bucket AND starts_with(key, $prefix || '_index/')
), per_key AS (
    SELECT key, SUM(CASE WHEN is_delete_marker THEN 0 ELSE 1 END) AS n_versions,
           SUM(CASE WHEN is_delete_marker THEN 1 ELSE 0 END) AS n_markers
    FROM inv GROUP BY key
), latest AS (
    SELECT * FROM inv WHERE is_latest AND NOT is_delete_marker
)
SELECT 'index-part-replaced' AS code, '' AS stream, '' AS segment, p.key, CAST(NULL AS BIGINT) AS seq,
       p.n_versions AS a, p.n_markers AS b, CAST(NULL AS VARCHAR) AS detail
FROM per_key p WHERE p.n_versions > 1 OR p.n_markers > 0
UNION ALL
SELECT 'not-locked', '', '', key, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),
       COALESCE(object_lock_mode, 'none')
FROM latest WHERE $check_locks AND COALESCE(upper(object_lock_mode), '') <> 'COMPLIANCE'
UNION ALL
SELECT 'retention-too-short', '', '', key, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),
       CAST(retain_until AS VARCHAR)
FROM latest WHERE $check_locks AND upper(object_lock_mode) = 'COMPLIANCE'
     AND (retain_until IS NULL OR retain_until < last_modified + INTERVAL $retention_days DAY - INTERVAL 1 DAY);

-- name: continuity
-- One window per stream, ordered by seq (and attempt): gaps, overlaps, links, silences.
WITH w AS (
    SELECT stream, segment, key, first_seq, last_seq, first_prev, sealed, first_ts,
           LAG(segment) OVER (PARTITION BY stream ORDER BY first_seq, length(segment), segment) AS prev_segment,
           LAG(last_seq) OVER (PARTITION BY stream ORDER BY first_seq, length(segment), segment) AS prev_last,
           LAG(last_hash) OVER (PARTITION BY stream ORDER BY first_seq, length(segment), segment) AS prev_hash,
           LAG(last_ts) OVER (PARTITION BY stream ORDER BY first_seq, length(segment), segment) AS prev_ts,
           LAG(sealed) OVER (PARTITION BY stream ORDER BY first_seq, length(segment), segment) AS prev_sealed
    FROM $index
    WHERE $stream_filter
)
SELECT 'missing-start' AS code, stream, segment, key, first_seq AS seq, CAST(0 AS BIGINT) AS a,
       first_seq - 1 AS b, CAST(NULL AS VARCHAR) AS detail
FROM w WHERE prev_segment IS NULL AND (first_seq <> 0 OR first_prev <> $genesis)
UNION ALL
SELECT 'missing-segment', stream, segment, key, prev_last + 1, prev_last + 1, first_seq - 1, prev_segment
FROM w WHERE prev_segment IS NOT NULL AND first_seq > prev_last + 1
UNION ALL
SELECT 'overlapping-segment', stream, segment, key, first_seq, first_seq, prev_last, prev_segment
FROM w WHERE prev_segment IS NOT NULL AND first_seq < prev_last + 1 AND prev_sealed
UNION ALL
SELECT 'broken-link', stream, segment, key, first_seq, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), prev_segment
FROM w WHERE prev_segment IS NOT NULL AND first_seq = prev_last + 1 AND first_prev <> prev_hash
UNION ALL
SELECT 'unsealed-segment', stream, prev_segment, key, prev_last, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),
       segment
FROM w WHERE prev_segment IS NOT NULL AND NOT prev_sealed AND first_seq > prev_last + 1
UNION ALL
SELECT 'time-gap', stream, segment, key, first_seq, date_diff('millisecond', prev_ts, first_ts), prev_last,
       prev_segment
FROM w WHERE $heartbeat_ms > 0 AND prev_ts IS NOT NULL AND first_ts IS NOT NULL
     AND date_diff('millisecond', prev_ts, first_ts) > 2 * $heartbeat_ms;

-- name: summary
-- Per stream: what the index holds (the report's totals) and how far it reaches.
SELECT stream, COUNT(*) AS segments, SUM(records) AS records, SUM(stored_size) AS bytes_stored,
       MAX(last_seq) + 1 AS log_size, MAX(confirmed_at) AS indexed_until,
       SUM(CASE WHEN confirmed_at > $inventory_time THEN 1 ELSE 0 END) AS newer_than_inventory,
       MAX(last_ts) AS newest_record
FROM $index
WHERE $stream_filter
GROUP BY stream;

-- name: sample
-- The segments read end to end: a random fraction, plus those covering given tree sizes.
SELECT stream, segment, key, first_seq, last_seq, size, sha256, stored_size, stored_sha256, merkle_root
FROM $index
WHERE $stream_filter AND (random() < $fraction OR $covering);
