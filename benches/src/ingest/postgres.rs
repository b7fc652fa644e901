//! The PostgreSQL peer of `bench ingest --peer postgres`: the same
//! per-(day, device) upsert load as the registry's device-days, into a
//! throwaway PostgreSQL cluster.
//!
//! [`Cluster::start`] runs `initdb` and `pg_ctl` from the Debian
//! `postgresql` package (`/usr/lib/postgresql/<version>/bin`) in a temporary
//! directory, on a free loopback port, as the `postgres` user (or `nobody`)
//! when the bench runs as root, since PostgreSQL refuses to run as root.
//! [`run`] opens `clients` connections, each owning a contiguous block of
//! devices, and upserts `rows_per_statement` rows per statement
//! (`INSERT … SELECT FROM unnest(…) ON CONFLICT (day, device) DO UPDATE`,
//! merging points and first/last time as the registry's store does), one
//! autocommitted statement at a time, for the given duration. The cluster is
//! stopped at the end, and on drop.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use fieldlink_model::{Day, UtcOffset, now_unix_nanos};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_postgres::NoTls;

use super::load::latency_histogram;
use super::report::{Latency, per_sec};

/// Where Debian installs PostgreSQL's versions.
const PG_ROOT: &str = "/usr/lib/postgresql";
/// The superuser of the throwaway cluster.
const PG_USER: &str = "fieldlink";
/// Server settings: room for the table in memory and no checkpoint during
/// a run; durability (fsync, synchronous_commit) stays at its default, as
/// the registry commits durably too.
const PG_SETTINGS: &str =
    "-c shared_buffers=1GB -c max_wal_size=16GB -c checkpoint_timeout=1h -c max_connections=64";

const CREATE: &str = "CREATE TABLE device_days (
    day integer NOT NULL,
    device bigint NOT NULL,
    points bigint NOT NULL,
    first_ns bigint NOT NULL,
    last_ns bigint NOT NULL,
    PRIMARY KEY (day, device))";

const UPSERT: &str = "INSERT INTO device_days (day, device, points, first_ns, last_ns)
    SELECT * FROM unnest($1::integer[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
    ON CONFLICT (day, device) DO UPDATE SET
        points = device_days.points + EXCLUDED.points,
        first_ns = LEAST(device_days.first_ns, EXCLUDED.first_ns),
        last_ns = GREATEST(device_days.last_ns, EXCLUDED.last_ns)";

/// The peer's load.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerPlan {
    /// Devices, split over the clients.
    pub(crate) devices: u64,
    /// Client connections.
    pub(crate) clients: usize,
    /// Rows per upsert statement.
    pub(crate) rows_per_statement: usize,
    /// How long to upsert.
    pub(crate) duration: Duration,
    /// Time zone of the day the rows belong to.
    pub(crate) offset: UtcOffset,
}

/// What the peer measured.
#[derive(Debug, Serialize)]
pub(crate) struct PeerOut {
    /// Always `postgres`.
    pub(crate) peer: &'static str,
    /// `SHOW server_version`.
    pub(crate) server_version: String,
    /// Settings the cluster ran with (beyond `initdb` defaults).
    pub(crate) settings: &'static str,
    /// Client connections.
    pub(crate) clients: usize,
    /// Rows per statement.
    pub(crate) rows_per_statement: usize,
    /// Statements executed.
    pub(crate) statements: u64,
    /// (day, device) rows upserted (inserted or updated).
    pub(crate) device_days: u64,
    /// From the first statement to the end of the last.
    pub(crate) seconds: f64,
    /// Rows upserted per second.
    pub(crate) device_days_per_sec: f64,
    /// Statement latency.
    pub(crate) statement_latency_us: Latency,
    /// Distinct rows in the table afterwards.
    pub(crate) distinct_rows: u64,
    /// Distinct (day, device) pairs the clients sent.
    pub(crate) expected_distinct_rows: u64,
}

/// The `bin` directory of the newest installed PostgreSQL.
///
/// # Errors
/// When no PostgreSQL server is installed.
pub(crate) fn find_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(PG_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!(
            "--peer postgres: PostgreSQL is not installed (no {PG_ROOT}/<version>/bin/initdb and pg_ctl); \
             install the Debian package: apt-get update && apt-get install -y postgresql"
        )
    })
}

/// A throwaway PostgreSQL cluster.
#[derive(Debug)]
pub(crate) struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// The user the server runs as, when the bench is root.
    run_as: Option<&'static str>,
    port: u16,
    running: bool,
}

impl Cluster {
    /// Creates and starts a cluster in a temporary directory.
    ///
    /// # Errors
    /// When PostgreSQL is missing, or `initdb` or `pg_ctl start` fail (their
    /// output is in the error).
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let bin = find_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("fieldlink-bench-pg-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let run_as = if !root {
            None
        } else if Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            Some("postgres")
        } else {
            Some("nobody")
        };
        if let Some(user) = run_as {
            run(Command::new("chown").arg(user).arg(dir.path()), "chown")?;
        }
        let port = free_port()?;
        let mut cluster = Cluster {
            bin,
            dir,
            run_as,
            port,
            running: false,
        };
        let data = cluster.data();
        let mut initdb = cluster.command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            PG_USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        ]);
        run(&mut initdb, "initdb")?;
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} {PG_SETTINGS}",
            cluster.dir.path().display()
        );
        let mut start = cluster.command("pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(cluster.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        let started = tokio::task::spawn_blocking(move || run(&mut start, "pg_ctl start"))
            .await
            .context("pg_ctl task failed")?;
        if let Err(e) = started {
            let log =
                std::fs::read_to_string(cluster.dir.path().join("server.log")).unwrap_or_default();
            return Err(e.context(format!("server log:\n{log}")));
        }
        cluster.running = true;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    /// A libpq-style connection string.
    fn config(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={PG_USER} dbname=postgres",
            self.port
        )
    }

    /// Stops the server (fast shutdown) and removes its directory.
    ///
    /// # Errors
    /// When `pg_ctl stop` fails.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"]);
        self.running = false;
        tokio::task::spawn_blocking(move || run(&mut stop, "pg_ctl stop"))
            .await
            .context("pg_ctl task failed")?
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let mut stop = self.command("pg_ctl");
            stop.arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"]);
            let _ = stop.output();
        }
    }
}

/// Runs `command` to its end; its output is the error when it fails.
fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// What one client did.
struct ClientOut {
    statements: u64,
    rows: u64,
    distinct: u64,
    latency: hdrhistogram::Histogram<u64>,
    ended: Instant,
}

/// Starts a cluster, runs the load of `plan`, stops the cluster.
///
/// # Errors
/// When PostgreSQL is missing, will not start, or a statement fails.
pub(crate) async fn bench(plan: PeerPlan) -> anyhow::Result<PeerOut> {
    println!("starting PostgreSQL (peer) ...");
    let cluster = Cluster::start().await?;
    let result = load(&cluster, plan).await;
    let stopped = cluster.stop().await;
    let out = result?;
    stopped.context("cannot stop PostgreSQL")?;
    Ok(out)
}

async fn connect(config: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(config, NoTls)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL ({config})"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("PostgreSQL connection failed: {e}");
        }
    });
    Ok(client)
}

async fn load(cluster: &Cluster, plan: PeerPlan) -> anyhow::Result<PeerOut> {
    let admin = connect(&cluster.config()).await?;
    admin
        .batch_execute(CREATE)
        .await
        .context("cannot create the table")?;
    let server_version: String = admin
        .query_one("SHOW server_version", &[])
        .await?
        .try_get(0)?;
    let clients = plan.clients.max(1);
    let (each, extra) = (plan.devices / clients as u64, plan.devices % clients as u64);
    let mut first = 0u64;
    let mut tasks = JoinSet::new();
    let mut connected = Vec::with_capacity(clients);
    for c in 0..clients {
        let devices = each + u64::from((c as u64) < extra);
        connected.push((connect(&cluster.config()).await?, first, devices));
        first += devices;
    }
    println!(
        "upserting (day, device) rows into PostgreSQL {server_version}: {clients} clients, {} rows/statement, for {} ...",
        plan.rows_per_statement,
        humantime::format_duration(plan.duration)
    );
    let start = Instant::now();
    let deadline = start + plan.duration;
    for (client, first, devices) in connected {
        tasks.spawn(upsert_loop(client, first, devices, plan, deadline));
    }
    let mut latency = latency_histogram();
    let (mut statements, mut rows, mut distinct) = (0u64, 0u64, 0u64);
    let mut ended = start;
    while let Some(done) = tasks.join_next().await {
        let out = done.context("a PostgreSQL client task failed")??;
        statements += out.statements;
        rows += out.rows;
        distinct += out.distinct;
        let _ = latency.add(&out.latency);
        ended = ended.max(out.ended);
    }
    let seconds = ended.duration_since(start).as_secs_f64();
    let count: i64 = admin
        .query_one("SELECT count(*) FROM device_days", &[])
        .await?
        .try_get(0)?;
    Ok(PeerOut {
        peer: "postgres",
        server_version,
        settings: PG_SETTINGS,
        clients,
        rows_per_statement: plan.rows_per_statement,
        statements,
        device_days: rows,
        seconds,
        device_days_per_sec: per_sec(rows, seconds),
        statement_latency_us: Latency::of(&latency),
        distinct_rows: u64::try_from(count).unwrap_or(0),
        expected_distinct_rows: distinct,
    })
}

/// One client: its devices `first..first + devices` in turn, one statement
/// of up to `rows_per_statement` distinct devices at a time, until `deadline`.
async fn upsert_loop(
    client: tokio_postgres::Client,
    first: u64,
    devices: u64,
    plan: PeerPlan,
    deadline: Instant,
) -> anyhow::Result<ClientOut> {
    let statement = client
        .prepare(UPSERT)
        .await
        .context("cannot prepare the upsert")?;
    let rows_per_statement = plan.rows_per_statement.min(devices as usize).max(1);
    let mut out = ClientOut {
        statements: 0,
        rows: 0,
        distinct: 0,
        latency: latency_histogram(),
        ended: Instant::now(),
    };
    if devices == 0 {
        return Ok(out);
    }
    let (mut day, mut device, mut points, mut first_ns, mut last_ns) = (
        Vec::with_capacity(rows_per_statement),
        Vec::with_capacity(rows_per_statement),
        Vec::with_capacity(rows_per_statement),
        Vec::with_capacity(rows_per_statement),
        Vec::with_capacity(rows_per_statement),
    );
    let mut next = 0u64;
    let mut sent = 0u64;
    while Instant::now() < deadline {
        let now = now_unix_nanos();
        let today = Day::of(now, plan.offset).0;
        day.clear();
        device.clear();
        points.clear();
        first_ns.clear();
        last_ns.clear();
        for _ in 0..rows_per_statement {
            day.push(today);
            device.push(i64::try_from(first + next).unwrap_or(i64::MAX));
            points.push(1i64);
            first_ns.push(now);
            last_ns.push(now);
            next = (next + 1) % devices;
        }
        let started = Instant::now();
        let n = client
            .execute(&statement, &[&day, &device, &points, &first_ns, &last_ns])
            .await
            .context("the upsert failed")?;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        out.latency.saturating_record(micros.max(1));
        out.statements += 1;
        out.rows += n;
        sent += rows_per_statement as u64;
    }
    out.ended = Instant::now();
    out.distinct = sent.min(devices);
    Ok(out)
}

/// The ratio `ours / theirs`, when both are positive.
pub(crate) fn ratio(ours: f64, theirs: f64) -> Option<f64> {
    (ours > 0.0 && theirs > 0.0).then(|| ours / theirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upsert_merges_as_the_store_does() {
        assert!(UPSERT.contains("ON CONFLICT (day, device) DO UPDATE"));
        assert!(UPSERT.contains("device_days.points + EXCLUDED.points"));
        assert_eq!(ratio(2.0, 1.0), Some(2.0));
        assert_eq!(ratio(2.0, 0.0), None);
    }

    #[test]
    fn a_missing_postgres_is_named() {
        // Either it is installed, or the error says how to install it.
        if let Err(e) = find_bin() {
            assert!(e.to_string().contains("apt-get install"), "{e}");
        }
    }
}
