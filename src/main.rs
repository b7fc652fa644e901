//! `fieldlink`: the one command-line tool. It parses flags and configuration,
//! starts the crates that do the work, and maps failures to exit codes.

mod broker_cmd;
mod certs_cmd;
mod demo_cmd;
mod fleet_broker;
mod fleet_run;
mod gateway_cmd;
mod ingress_cmd;
mod logging;
mod registry_cmd;
mod report;
mod sim_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc keeps allocations of one size together, so the lean
/// ingress's many long-lived small ones (a connection's task, socket
/// registration and presence) do not sit between short-lived ones and its
/// 128-byte-aligned ones are not padded: measured with 15 000 idle
/// connections on one shard, 1.13 KB per connection against glibc's 1.22
/// (then; 0.87 KB now, see `broker/src/ingress`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process and the ones it
/// starts (the flag survives fork and exec). mimalloc asks for huge pages
/// on its arenas, so each 2 MiB region a shard or fleet process touches is
/// zeroed whole at its first fault: ramping 100 000 lean devices on 2 cores,
/// 29 % of all CPU went to the kernel's `clear_page_erms`. Without them the
/// ramp ran at 9 020 connects/s instead of 5 184, the ingress shards held
/// 12.95 KiB per connection instead of 14.07, and `bench ingest` at 2 M
/// devices took 682 k device-days/s instead of 647 k. A kernel without the
/// call (before Linux 3.15) keeps huge pages; nothing else changes.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Fieldlink: industrial device connectivity with exact, checkable device counts.
#[derive(Debug, Parser)]
#[command(name = "fieldlink", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process: registry, a simulated fleet of all four classes over a public
    /// and a private tenant, and their gateways; prints the dashboard URL and live counts.
    Demo(demo_cmd::DemoArgs),
    /// Run the registry: gRPC ingest from gateways, device store, counts, HTTP API.
    Registry(registry_cmd::RegistryArgs),
    /// Run a gateway: reach devices (Modbus TCP, MQTT JSON, Sparkplug B), spool to disk, stream
    /// to the registry.
    Gateway(gateway_cmd::GatewayArgs),
    /// Run the MQTT broker: password auth, per-tenant ACLs, TLS, metrics; `passwd` makes hashes.
    Broker(broker_cmd::BrokerArgs),
    /// Write a test CA, a server certificate for localhost/127.0.0.1 and a client certificate.
    Certs(certs_cmd::CertsArgs),
    /// Simulated device fleets (Modbus TCP, MQTT JSON, Sparkplug B) with ground-truth manifest,
    /// tenants and gateway configs.
    Sim(sim_cmd::SimArgs),
    /// Print the platform form's figures (form 1.1) or device list from a running registry.
    Report(report::ReportArgs),
    /// Run a load bench; prints a summary and writes JSON under benches/results/.
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    #[command(subcommand)]
    bench: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Stream synthetic devices and telemetry into a registry; points/s, ack latency, RSS.
    Ingest(fieldlink_bench::ingest::IngestArgs),
    /// Poll simulated Modbus TCP devices with one gateway, then with pymodbus; registers/s,
    /// transactions/s, per CPU-second, poll latency, RSS per device, and the ratios.
    Modbus(fieldlink_bench::modbus::ModbusArgs),
    /// Subscribe one gateway to N items of a simulated OPC UA server, then asyncua; items
    /// created per second, value changes per second into the registry, RSS per item, ratios.
    Opcua(fieldlink_bench::opcua::OpcUaArgs),
    /// MQTT JSON device clients through `fieldlink broker` into the gateway and the registry,
    /// then the same through mosquitto; connect rate, broker RSS per connection, messages/s
    /// end to end, CPU per 1 000 messages, latency, and the ratios.
    Mqtt(fieldlink_bench::mqtt::MqttArgs),
    /// Reconcile a registry with a fleet's manifest.csv: registered, online and reporting
    /// counts per class, category, protocol and cloud, and the device list id by id; then
    /// asks an audit sample of devices through their own protocol (Modbus, OPC UA, MQTT,
    /// Sparkplug); fails on any difference and prints it.
    Verify(fieldlink_bench::verify::VerifyArgs),
    /// Ramp a lean fleet of MQTT devices (up to a million, each its own connection from
    /// its own 127.x.y.z address) through the lean ingress into a registry, hold it, verify
    /// the counts; then hold the same fleet on mosquitto shards; connects/s, RSS and kernel
    /// memory per connection, CPU, publish-to-counted latency, and the ratios.
    Connections(fieldlink_bench::connections::ConnectionsArgs),
}

/// Exit code for a configuration that cannot be used.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    logging::init();
    let mut builder = match &cli.command {
        Command::Broker(args) if args.is_shard() => tokio::runtime::Builder::new_current_thread(),
        Command::Sim(args) if args.is_lean_shard() => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Registry(args) => registry_cmd::run(args).await,
            Command::Demo(args) => demo_cmd::run(args).await,
            Command::Gateway(args) => gateway_cmd::run(args).await,
            Command::Broker(args) => broker_cmd::run(args).await,
            Command::Certs(args) => certs_cmd::run(args).await,
            Command::Sim(args) => sim_cmd::run(args).await,
            Command::Report(args) => report::run(args).await,
            Command::Bench(BenchArgs {
                bench: BenchCommand::Ingest(args),
            }) => fieldlink_bench::ingest::run(args).await,
            Command::Bench(BenchArgs {
                bench: BenchCommand::Modbus(args),
            }) => fieldlink_bench::modbus::run(args).await,
            Command::Bench(BenchArgs {
                bench: BenchCommand::Opcua(args),
            }) => fieldlink_bench::opcua::run(args).await,
            Command::Bench(BenchArgs {
                bench: BenchCommand::Mqtt(args),
            }) => fieldlink_bench::mqtt::run(args).await,
            Command::Bench(BenchArgs {
                bench: BenchCommand::Verify(args),
            }) => fieldlink_bench::verify::run(args).await,
            Command::Bench(BenchArgs {
                bench: BenchCommand::Connections(args),
            }) => fieldlink_bench::connections::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // One type for every process's configuration.
            if e.downcast_ref::<fieldlink_model::ConfigError>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Prints a line to stdout; a closed stdout (the reader went away) is not
/// worth failing for.
pub(crate) fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
