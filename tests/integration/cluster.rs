//! Throwaway PostgreSQL and Slurm clusters, started by the tests themselves in temporary
//! folders: never a system service, nothing left behind.
//!
//! Both come from Debian's packages (`postgresql`; `slurmctld slurmd slurm-client munge`).
//! Where they are not installed a test skips with a note, unless `CIFAR_SWEEP_REQUIRE_PG=1`
//! or `CIFAR_SWEEP_REQUIRE_SLURM=1` (set by .ci/run after installing them) makes it fail.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// None (the test skips) when `what` is missing, or a panic when `require` is set.
fn unavailable<T>(require: &str, what: &str, why: &str) -> Option<T> {
    if std::env::var_os(require).is_some_and(|v| v == "1") {
        panic!("{require}=1 but {what} cannot be started here: {why}");
    }
    eprintln!("note: {what} not available ({why}); skipping (set {require}=1 to fail instead)");
    None
}

/// A loopback port nobody listens on now (the daemon that gets it may still lose a race,
/// which the starters retry).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `cmd`'s output, or a panic showing what it printed.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `done` every 100 ms for up to `limit`; whether it became true.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

/// The last lines of a log file, for a failure message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "{}:\n{}",
        path.display(),
        lines[lines.len().saturating_sub(20)..].join("\n")
    )
}

/// SIGTERM, up to 10 s to exit, then SIGKILL.
fn stop_child(child: &mut Child) {
    // SAFETY: signalling our own child, whose pid is not reused before we wait for it.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A PostgreSQL cluster of its own: `initdb` in a temporary folder, a free loopback port,
/// trust authentication for the user [`Postgres::USER`] and a database [`Postgres::DB`].
///
/// PostgreSQL refuses to run as root. When the tests run as root (CI containers) the server
/// runs as the `postgres` system user that Debian's package creates, and the folder is
/// handed to it; the clients (`psql`, the tests) may stay root.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// (uid, gid) the server runs as; None for the current user.
    owner: Option<(u32, u32)>,
    /// The password [`Postgres::require_password`] set, which `psql` passes.
    password: Option<String>,
}

impl Postgres {
    pub const USER: &'static str = "cifar";
    pub const DB: &'static str = "sweep";
    const REQUIRE: &'static str = "CIFAR_SWEEP_REQUIRE_PG";

    /// A running cluster, or None (with a note) when PostgreSQL is not installed.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = Self::find_bin() else {
            return unavailable(
                Self::REQUIRE,
                "PostgreSQL",
                "no initdb in /usr/lib/postgresql/*/bin (Debian package `postgresql`)",
            );
        };
        let owner = if is_root() {
            match user_ids("postgres") {
                Some(ids) => Some(ids),
                None => {
                    return unavailable(
                        Self::REQUIRE,
                        "PostgreSQL",
                        "running as root and there is no `postgres` user to run the server as",
                    )
                }
            }
        } else {
            None
        };
        // Under /tmp, not $TMPDIR: the `postgres` user must be able to reach the folder.
        let dir = tempfile::Builder::new()
            .prefix("cifar-pg-")
            .tempdir_in(if owner.is_some() {
                PathBuf::from("/tmp")
            } else {
                std::env::temp_dir()
            })
            .unwrap();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            owner,
            password: None,
        };
        run_ok(pg.as_owner("initdb").args([
            "-D",
            pg.data().to_str().unwrap(),
            "-U",
            Self::USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            // A throwaway cluster: no fsync of the new files.
            "--no-sync",
        ]));
        for attempt in 1..=5 {
            pg.port = free_port();
            let out = pg.pg_ctl(&["start"]);
            if out.status.success() {
                break;
            }
            assert!(
                attempt < 5,
                "pg_ctl start failed 5 times: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                tail(&pg.dir.path().join("server.log"))
            );
        }
        run_ok(Command::new(pg.bin.join("createdb")).args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            Self::USER,
            Self::DB,
        ]));
        Some(pg)
    }

    /// The newest `/usr/lib/postgresql/<version>/bin` holding initdb.
    fn find_bin() -> Option<PathBuf> {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, bin)| bin)
    }

    /// `postgres://cifar@127.0.0.1:PORT/sweep`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            Self::USER,
            self.port,
            Self::DB
        )
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A server-side program, run as the cluster's owner.
    fn as_owner(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(self.bin.join(program));
        // The test's own folder may be closed to the `postgres` user.
        c.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid).env("HOME", self.dir.path());
        }
        c
    }

    /// `pg_ctl ACTION` on this cluster (`start`, `stop`, `restart`), waiting for it to finish;
    /// the server listens on 127.0.0.1 only, its socket in the cluster's folder.
    pub fn pg_ctl(&self, action: &[&str]) -> Output {
        let options = format!(
            "-p {} -h 127.0.0.1 -k {} -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        self.as_owner("pg_ctl")
            .args(["-D", self.data().to_str().unwrap()])
            .args(["-l", self.dir.path().join("server.log").to_str().unwrap()])
            .args(["-w", "-t", "60", "-m", "fast", "-o", &options])
            .args(action)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// From now on the server asks [`Postgres::USER`] for `password` over TCP
    /// (scram-sha-256) instead of trusting it; `psql` passes it.
    pub fn require_password(&mut self, password: &str) {
        self.psql(&format!("ALTER ROLE {} PASSWORD '{password}'", Self::USER));
        // Rewritten in place, so the file keeps its owner (the server's user).
        std::fs::write(
            self.data().join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        self.psql("SELECT pg_reload_conf()");
        self.password = Some(password.to_string());
    }

    /// `psql -c SQL` against the database; its unaligned, header-less output.
    pub fn psql(&self, sql: &str) -> String {
        let mut c = Command::new(self.bin.join("psql"));
        if let Some(p) = &self.password {
            c.env("PGPASSWORD", p);
        }
        let out = run_ok(
            c.args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql])
                .arg(self.url()),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.port != 0 {
            let _ = self.pg_ctl(&["stop"]);
        }
    }
}

/// The uid and gid of `user`, when it exists.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(user).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or null; read at once, before any
    // other passwd lookup could overwrite it.
    unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        (!pw.is_null()).then(|| ((*pw).pw_uid, (*pw).pw_gid))
    }
}

/// One Slurm cluster at a time: the node is this machine, and two clusters would each hand
/// out all of its CPUs.
static SLURM_LOCK: Mutex<()> = Mutex::new(());

/// A single-node Slurm cluster in a temporary folder: its own munged (key, socket, pid and
/// log in the folder), a slurm.conf naming this host with its real CPUs and memory, and
/// slurmctld and slurmd on free ports. Clients find it through `SLURM_CONF` (see
/// [`Slurm::command`], or [`Slurm::env`] for a `cifar-sweep slurm --submit`).
pub struct Slurm {
    dir: tempfile::TempDir,
    node: String,
    /// munged, slurmctld, slurmd, in the order they started.
    daemons: Vec<Child>,
    _lock: MutexGuard<'static, ()>,
}

impl Slurm {
    const REQUIRE: &'static str = "CIFAR_SWEEP_REQUIRE_SLURM";

    /// A cluster with its node idle, or None (with a note) when Slurm is not installed.
    pub fn start() -> Option<Slurm> {
        let programs = [
            "munged",
            "slurmctld",
            "slurmd",
            "sbatch",
            "squeue",
            "sinfo",
            "scancel",
        ];
        if let Some(p) = programs.iter().find(|p| which(p).is_none()) {
            return unavailable(
                Self::REQUIRE,
                "Slurm",
                &format!("no `{p}` (Debian packages `slurmctld slurmd slurm-client munge`)"),
            );
        }
        if !is_root() {
            // slurmd launches jobs as their users, which takes root.
            return unavailable(Self::REQUIRE, "Slurm", "slurmd must run as root");
        }
        let lock = SLURM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::Builder::new()
            .prefix("cifar-slurm-")
            .tempdir()
            .unwrap();
        let root = dir.path().to_path_buf();
        let path = |name: &str| root.join(name);
        // This host as slurmd sees it: `NodeName=... CPUs=... RealMemory=...`.
        let out = run_ok(Command::new(which("slurmd").unwrap()).arg("-C"));
        let node_line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let node = node_line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("NodeName="))
            .unwrap_or_else(|| panic!("slurmd -C printed no NodeName: {node_line:?}"))
            .to_string();

        // A fresh munge key: this cluster trusts nobody else's credentials.
        let mut key = vec![0u8; 1024];
        {
            use std::io::Read;
            std::fs::File::open("/dev/urandom")
                .unwrap()
                .read_exact(&mut key)
                .unwrap();
        }
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path("munge.key"))
                .unwrap()
                .write_all(&key)
                .unwrap();
        }
        let socket = path("munge.socket");
        let mut slurm = Slurm {
            node,
            daemons: Vec::new(),
            _lock: lock,
            dir,
        };
        let munged = slurm.daemon(
            Command::new(which("munged").unwrap())
                // Foreground: the test owns the process. --force: a key and folders made
                // by root in /tmp are fine for a throwaway cluster.
                .args(["--foreground", "--force"])
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--key-file={}", path("munge.key").display()))
                .arg(format!("--log-file={}", path("munged.log").display()))
                .arg(format!("--pid-file={}", path("munged.pid").display()))
                .arg(format!("--seed-file={}", path("munged.seed").display())),
            "munged",
        );
        slurm.daemons.push(munged);
        slurm.wait_for("munged's socket", &path("munged.log"), || socket.exists());

        for d in ["state", "spool"] {
            std::fs::create_dir(path(d)).unwrap();
        }
        // OverSubscribe=FORCE:4: up to four tasks share a core, so that a 3-task array runs
        // at once on a 2-core machine, as it would on a cluster's nodes side by side.
        let conf = format!(
            "# A single-node cluster for cifar-sweep's tests.\n\
             ClusterName=cifartest\n\
             SlurmctldHost={node}(127.0.0.1)\n\
             SlurmctldPort={ctld_port}\n\
             SlurmdPort={d_port}\n\
             AuthType=auth/munge\n\
             CredType=cred/munge\n\
             AuthInfo=socket={socket}\n\
             SlurmUser=root\n\
             SlurmdUser=root\n\
             StateSaveLocation={dir}/state\n\
             SlurmdSpoolDir={dir}/spool\n\
             SlurmctldPidFile={dir}/slurmctld.pid\n\
             SlurmdPidFile={dir}/slurmd.pid\n\
             SlurmctldLogFile={dir}/slurmctld.log\n\
             SlurmdLogFile={dir}/slurmd.log\n\
             ProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\n\
             SelectType=select/cons_tres\n\
             SelectTypeParameters=CR_Core\n\
             ReturnToService=2\n\
             MpiDefault=none\n\
             JobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\n\
             MailProg=/bin/true\n\
             {node_line} NodeAddr=127.0.0.1 State=UNKNOWN\n\
             PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP \
             OverSubscribe=FORCE:4\n",
            node = slurm.node,
            ctld_port = free_port(),
            d_port = free_port(),
            socket = socket.display(),
            dir = root.display(),
        );
        std::fs::write(slurm.conf(), conf).unwrap();
        for daemon in ["slurmctld", "slurmd"] {
            let child = slurm.daemon(
                Command::new(which(daemon).unwrap())
                    .arg("-D")
                    .arg("-f")
                    .arg(slurm.conf()),
                daemon,
            );
            slurm.daemons.push(child);
        }
        let log = path("slurmctld.log");
        let mut sinfo = slurm.command("sinfo");
        sinfo.args(["-h", "-n", &slurm.node, "-o", "%T"]);
        slurm.wait_for("the node to be idle", &log, || {
            let out = sinfo.output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim() == "idle"
        });
        Some(slurm)
    }

    /// Starts a daemon, its output in `<name>.out` in the cluster's folder.
    fn daemon(&self, cmd: &mut Command, name: &str) -> Child {
        let out = std::fs::File::create(self.dir.path().join(format!("{name}.out"))).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Waits up to 60 s for `ready`; a daemon that died, or the wait running out, fails the
    /// test with the daemons' output.
    fn wait_for(&mut self, what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
        let ok = wait_until(Duration::from_secs(60), || {
            ready()
                || self
                    .daemons
                    .iter_mut()
                    .any(|d| d.try_wait().unwrap().is_some())
        });
        let dead: Vec<usize> = (0..self.daemons.len())
            .filter(|&i| self.daemons[i].try_wait().unwrap().is_some())
            .collect();
        if !ok || !dead.is_empty() {
            let outs: Vec<String> = ["munged", "slurmctld", "slurmd"]
                .iter()
                .map(|n| tail(&self.dir.path().join(format!("{n}.out"))))
                .collect();
            panic!(
                "Slurm test cluster: waiting for {what}: {}\n{}\n{}",
                if dead.is_empty() {
                    "timed out".to_string()
                } else {
                    format!("daemon(s) {dead:?} exited")
                },
                tail(log),
                outs.join("\n")
            );
        }
    }

    /// The cluster's slurm.conf.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// What a client needs to reach this cluster.
    pub fn env(&self) -> [(&'static str, PathBuf); 1] {
        [("SLURM_CONF", self.conf())]
    }

    /// A Slurm client command (`sbatch`, `squeue`, ...) aimed at this cluster.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.envs(self.env()).stdin(Stdio::null());
        c
    }

    /// `sbatch --parsable ARGS`: the job id.
    pub fn sbatch(&self, args: &[&str]) -> String {
        let out = run_ok(self.command("sbatch").arg("--parsable").args(args));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    }

    /// The states (`PENDING`, `RUNNING`, ...) of the job's tasks still in the queue.
    pub fn states(&self, job: &str) -> Vec<String> {
        let out = run_ok(self.command("squeue").args(["-h", "-j", job, "-o", "%T"]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits up to `limit` for every task of `job` to leave the queue; whether they did.
    pub fn wait_gone(&self, job: &str, limit: Duration) -> bool {
        wait_until(limit, || self.states(job).is_empty())
    }

    /// `scontrol show job JOB` (tasks finished within the last five minutes included).
    pub fn show_job(&self, job: &str) -> String {
        let out = run_ok(self.command("scontrol").args(["show", "job", job]));
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        // Jobs first: their processes would outlive slurmd.
        let _ = self
            .command("scancel")
            .args(["--partition=debug"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        wait_until(Duration::from_secs(15), || {
            self.command("squeue")
                .args(["-h", "-o", "%i"])
                .output()
                .map(|o| o.stdout.is_empty())
                .unwrap_or(true)
        });
        for d in self.daemons.iter_mut().rev() {
            stop_child(d);
        }
    }
}

/// `program` on PATH, or in the sbin folders a non-login root shell may lack.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[test]
fn postgres_cluster_answers_a_query() {
    let Some(pg) = Postgres::start() else { return };
    assert_eq!(pg.psql("SELECT 1"), "1");
    assert!(
        pg.url().starts_with("postgres://cifar@127.0.0.1:"),
        "{}",
        pg.url()
    );
    let data = pg.data();
    drop(pg);
    assert!(!data.exists(), "the cluster's folder was left behind");
}

#[test]
fn slurm_cluster_runs_a_job_array_and_cancels_a_job() {
    let Some(slurm) = Slurm::start() else { return };
    let out = tempfile::tempdir().unwrap();
    let o = out.path().display();
    let job = slurm.sbatch(&[
        "--array=0-2",
        &format!("--output={o}/%A_%a.log"),
        "--wrap",
        &format!("echo task $SLURM_ARRAY_TASK_ID > {o}/file-$SLURM_ARRAY_TASK_ID"),
    ]);
    assert!(
        slurm.wait_gone(&job, Duration::from_secs(60)),
        "{job} did not finish"
    );
    for i in 0..3 {
        let text = std::fs::read_to_string(out.path().join(format!("file-{i}")))
            .unwrap_or_else(|e| panic!("task {i} wrote nothing ({e})"));
        assert_eq!(text, format!("task {i}\n"));
    }

    let job = slurm.sbatch(&[&format!("--output={o}/sleep.log"), "--wrap", "sleep 300"]);
    assert!(
        wait_until(Duration::from_secs(30), || slurm.states(&job)
            == ["RUNNING"]),
        "{job} did not start: {:?}",
        slurm.states(&job)
    );
    run_ok(slurm.command("scancel").arg(&job));
    assert!(
        slurm.wait_gone(&job, Duration::from_secs(30)),
        "scancel left {job}"
    );
    assert!(slurm.show_job(&job).contains("JobState=CANCELLED"));
}
