-- cifar-sweep results schema, version 2: checkpoints belong to their database.
-- Several databases in one folder (or a results.db deleted to start over) used to share
-- `checkpoints/<sweep>/<trial_key>/`, so a new database "resumed" another one's finished
-- trials. Each database now has a random id, and its checkpoint folders include it.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(8))));

-- The trial's checkpoint folder, relative to the database's folder: set when the trial is
-- first claimed, `checkpoints/<store_id>/<sweep>/<trial_key>`.
ALTER TABLE trials ADD COLUMN checkpoint_dir TEXT;

-- Trials a version-1 database already started keep their folder in the old layout, so their
-- checkpoints stay usable; trials it never started get a folder of their own.
UPDATE trials SET checkpoint_dir = 'checkpoints/'
    || (SELECT s.name FROM sweeps s WHERE s.id = trials.sweep_id) || '/' || trial_key
WHERE attempts > 0;
