-- cifar-sweep results schema, version 3: early stopping.
-- A trial stopped by a pruning rule gets the status `pruned` and the epoch it stopped at;
-- every decision a rule took (continue or stop) is kept in `decisions`, so a report can say
-- why and a resumed sweep replays it. SQLite cannot change a CHECK constraint in place, so
-- `trials` is rebuilt (the migration runs with foreign keys off, so the rows that refer to
-- trials are kept), and the views over it are made again.
DROP VIEW trial_summary;
DROP VIEW best_per_arch;
DROP VIEW class_accuracy_wide;

CREATE TABLE trials_v3 (
    id              INTEGER PRIMARY KEY,
    sweep_id        INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    trial_key       TEXT NOT NULL,          -- hash of the resolved config and the data checksum
    ordinal         INTEGER NOT NULL,       -- position in the expanded sweep
    config          TEXT NOT NULL,          -- resolved config, JSON
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending','running','done','failed','diverged',
                                      'interrupted','pruned')),
    error           TEXT,
    worker          TEXT,                   -- host:pid:start of the process that ran it last
    device          TEXT,
    heartbeat       TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    best_epoch      INTEGER,
    best_valid_loss REAL,
    test_loss       REAL,
    test_acc        REAL,
    train_seconds   REAL,
    images_per_sec  REAL,
    checkpoint      TEXT,
    started_at      TEXT,
    finished_at     TEXT,
    checkpoint_dir  TEXT,
    pruned_epoch    INTEGER,                -- the last epoch a pruned trial ran
    arch            TEXT    GENERATED ALWAYS AS (json_extract(config, '$.arch')) VIRTUAL,
    lr              REAL    GENERATED ALWAYS AS (json_extract(config, '$.lr')) VIRTUAL,
    batch_size      INTEGER GENERATED ALWAYS AS (json_extract(config, '$.batch_size')) VIRTUAL,
    dropout         REAL    GENERATED ALWAYS AS (json_extract(config, '$.dropout')) VIRTUAL,
    epochs          INTEGER GENERATED ALWAYS AS (json_extract(config, '$.epochs')) VIRTUAL,
    optimizer       TEXT    GENERATED ALWAYS AS (json_extract(config, '$.optimizer')) VIRTUAL,
    momentum        REAL    GENERATED ALWAYS AS (json_extract(config, '$.momentum')) VIRTUAL,
    weight_decay    REAL    GENERATED ALWAYS AS (json_extract(config, '$.weight_decay')) VIRTUAL,
    schedule        TEXT    GENERATED ALWAYS AS (json_extract(config, '$.schedule')) VIRTUAL,
    augment         INTEGER GENERATED ALWAYS AS (json_extract(config, '$.augment')) VIRTUAL,
    label_smoothing REAL    GENERATED ALWAYS AS (json_extract(config, '$.label_smoothing')) VIRTUAL,
    seed            INTEGER GENERATED ALWAYS AS (json_extract(config, '$.seed')) VIRTUAL,
    UNIQUE (sweep_id, trial_key)
);
INSERT INTO trials_v3 (id, sweep_id, trial_key, ordinal, config, status, error, worker, device,
    heartbeat, attempts, best_epoch, best_valid_loss, test_loss, test_acc, train_seconds,
    images_per_sec, checkpoint, started_at, finished_at, checkpoint_dir)
SELECT id, sweep_id, trial_key, ordinal, config, status, error, worker, device,
    heartbeat, attempts, best_epoch, best_valid_loss, test_loss, test_acc, train_seconds,
    images_per_sec, checkpoint, started_at, finished_at, checkpoint_dir
FROM trials;
DROP TABLE trials;
ALTER TABLE trials_v3 RENAME TO trials;
CREATE INDEX trials_by_status ON trials (sweep_id, status, ordinal);

-- One row per pruning decision: the trial's objective at `epoch`, what it was compared with
-- (how many trials' results at that epoch, and the value to beat), and whether it stopped.
CREATE TABLE decisions (
    trial_id      INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    epoch         INTEGER NOT NULL,
    rule          TEXT NOT NULL,            -- asha, median, asha-pareto
    rung          INTEGER,
    value         REAL,                     -- the trial's (first) objective then
    compared_with INTEGER NOT NULL,
    cutoff        REAL,
    stop          INTEGER NOT NULL,
    PRIMARY KEY (trial_id, epoch)
);

CREATE VIEW trial_summary AS
SELECT s.name AS sweep, t.id AS trial, t.trial_key, t.status, t.arch, t.lr, t.batch_size,
       t.dropout, t.epochs, t.optimizer, t.seed, t.best_epoch, t.best_valid_loss,
       t.test_loss, t.test_acc, t.train_seconds, t.images_per_sec, t.device, t.error,
       t.pruned_epoch
FROM trials t JOIN sweeps s ON s.id = t.sweep_id;

CREATE VIEW best_per_arch AS
SELECT arch, trial, sweep, MAX(test_acc) AS test_acc, lr, batch_size, dropout, epochs,
       train_seconds
FROM trial_summary WHERE status = 'done' GROUP BY arch;

CREATE VIEW class_accuracy_wide AS
SELECT t.trial, t.sweep, t.arch, t.lr, t.batch_size, t.test_acc,
       MAX(CASE c.class_index WHEN 0 THEN c.accuracy END) AS airplane,
       MAX(CASE c.class_index WHEN 1 THEN c.accuracy END) AS automobile,
       MAX(CASE c.class_index WHEN 2 THEN c.accuracy END) AS bird,
       MAX(CASE c.class_index WHEN 3 THEN c.accuracy END) AS cat,
       MAX(CASE c.class_index WHEN 4 THEN c.accuracy END) AS deer,
       MAX(CASE c.class_index WHEN 5 THEN c.accuracy END) AS dog,
       MAX(CASE c.class_index WHEN 6 THEN c.accuracy END) AS frog,
       MAX(CASE c.class_index WHEN 7 THEN c.accuracy END) AS horse,
       MAX(CASE c.class_index WHEN 8 THEN c.accuracy END) AS ship,
       MAX(CASE c.class_index WHEN 9 THEN c.accuracy END) AS truck
FROM trial_summary t JOIN class_accuracy c ON c.trial_id = t.trial
GROUP BY t.trial;
