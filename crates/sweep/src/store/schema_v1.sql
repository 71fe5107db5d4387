-- cifar-sweep results schema, version 1.
CREATE TABLE sweeps (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    description   TEXT NOT NULL DEFAULT '',
    spec          TEXT NOT NULL,            -- the sweep file's text
    spec_path     TEXT,
    host          TEXT,
    git_rev       TEXT,
    device        TEXT,
    data_checksum TEXT,
    created_at    TEXT NOT NULL DEFAULT (datetime('now')),
    started_at    TEXT,
    finished_at   TEXT
);

CREATE TABLE trials (
    id              INTEGER PRIMARY KEY,
    sweep_id        INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    trial_key       TEXT NOT NULL,          -- hash of the resolved config and the data checksum
    ordinal         INTEGER NOT NULL,       -- position in the expanded sweep
    config          TEXT NOT NULL,          -- resolved config, JSON
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending','running','done','failed','diverged','interrupted')),
    error           TEXT,
    worker          TEXT,                   -- host:pid of the process that ran it last
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
    -- The hyperparameters as columns, derived from the JSON so they can never disagree.
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
CREATE INDEX trials_by_status ON trials (sweep_id, status, ordinal);

CREATE TABLE epochs (
    trial_id       INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    epoch          INTEGER NOT NULL,        -- 1-based
    train_loss     REAL NOT NULL,
    train_acc      REAL NOT NULL,
    valid_loss     REAL NOT NULL,
    valid_acc      REAL NOT NULL,
    lr             REAL NOT NULL,
    seconds        REAL NOT NULL,
    images_per_sec REAL NOT NULL,
    PRIMARY KEY (trial_id, epoch)
);

CREATE TABLE class_accuracy (
    trial_id    INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    class_index INTEGER NOT NULL,
    class_name  TEXT NOT NULL,
    correct     INTEGER NOT NULL,
    total       INTEGER NOT NULL,
    accuracy    REAL NOT NULL,
    PRIMARY KEY (trial_id, class_index)
);

CREATE TABLE confusion (
    trial_id        INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    true_class      INTEGER NOT NULL,
    predicted_class INTEGER NOT NULL,
    count           INTEGER NOT NULL,
    PRIMARY KEY (trial_id, true_class, predicted_class)
);

-- One row per trial with its sweep's name: the usual starting point of a query.
CREATE VIEW trial_summary AS
SELECT s.name AS sweep, t.id AS trial, t.trial_key, t.status, t.arch, t.lr, t.batch_size,
       t.dropout, t.epochs, t.optimizer, t.seed, t.best_epoch, t.best_valid_loss,
       t.test_loss, t.test_acc, t.train_seconds, t.images_per_sec, t.device, t.error
FROM trials t JOIN sweeps s ON s.id = t.sweep_id;

-- The best finished trial of each architecture, over all sweeps.
CREATE VIEW best_per_arch AS
SELECT arch, trial, sweep, MAX(test_acc) AS test_acc, lr, batch_size, dropout, epochs,
       train_seconds
FROM trial_summary WHERE status = 'done' GROUP BY arch;

-- Per-class test accuracy as one row per trial (official CIFAR-10 class order).
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
