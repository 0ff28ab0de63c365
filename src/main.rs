//! The `do-scaler` binary: parses the command line, sets up logging, and calls the library.

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use do_scaler::clock::SystemClock;
use do_scaler::commands;
use do_scaler::config::{Overrides, credentials, load::DEFAULT_CONFIG_PATH};
use do_scaler::sim::{Demand, Faults, SimOptions};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Keeps pools of DigitalOcean droplets at the right size.
#[derive(Parser)]
#[command(name = "do-scaler", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// Options shared by every subcommand that reads the configuration.
#[derive(Args)]
struct ConfigArgs {
    /// The base configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Replaces the base file's api_url (for example a `do-scaler sim`).
    #[arg(long, env = "DIGITALOCEAN_API_URL")]
    api_url: Option<String>,
    /// Replaces the base file's `state` (a SQLite file or a PostgreSQL URL). A flag only, never
    /// an environment variable: a stray variable would silently split a shared state.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Replaces the status API's listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

/// Whose time a command keeps.
#[derive(Args)]
struct ClockArgs {
    /// Keep a sim's time instead of the system's: its clock URL, such as
    /// http://127.0.0.1:PORT/v2/_sim/clock (for a sim at --speed; samples are stamped on the
    /// sim's time and intervals pass as fast as the sim's).
    #[arg(long = "clock", value_name = "URL")]
    url: Option<String>,
}

impl ClockArgs {
    /// The system clock, or a copy of the sim's.
    async fn clock(&self) -> Result<Arc<dyn do_scaler::clock::Clock>> {
        Ok(match &self.url {
            Some(url) => Arc::new(do_scaler::clock::follow(url).await?),
            None => Arc::new(SystemClock),
        })
    }
}

/// How the commands for people find a running daemon.
#[derive(Args)]
struct RemoteArgs {
    /// The base configuration file (its status_api.listen and token_file).
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// The daemon's status API: a URL such as http://127.0.0.1:9797, or HOST:PORT.
    #[arg(long)]
    api: Option<String>,
    /// A file holding the status API token (default: the `api-token` credential, then the
    /// base file's status_api.token_file).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Print the status API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl RemoteArgs {
    async fn run(&self, request: commands::remote::Request) -> ExitCode {
        let target = match commands::remote::target(
            self.api.as_deref(),
            self.token_file.as_deref(),
            &self.config,
            &credentials::process_env,
        ) {
            Ok(target) => target,
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::FAILURE;
            }
        };
        emit(commands::remote::run(&target, &request, self.json).await)
    }
}

impl ConfigArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            api_url: self.api_url.clone(),
            state: self.state.clone(),
            listen: self.listen,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration; with --online, also against the DigitalOcean account.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
        /// Also check the token, sizes, regions, images, SSH keys, VPCs, the droplet limit and
        /// the API budget against the account (needs a token).
        #[arg(long)]
        online: bool,
    },
    /// Run a simulated DigitalOcean on this machine (API and droplets on loopback).
    Sim(SimArgs),
    /// Try do-scaler on one machine: the simulated DigitalOcean and the daemon, under a
    /// demand that rises then falls; prints each decision, a summary and a chart.
    Demo {
        /// Where the configuration copy, the state and the chart go.
        #[arg(long, default_value = "demo-out")]
        out: PathBuf,
        /// How long to run.
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        duration: Duration,
        /// Demand in vCPUs instead of the built-in curve: N, step:A:B:AT, sine:BASE:AMP:PERIOD, csv:FILE.
        #[arg(long)]
        curve: Option<String>,
        /// A base file of your own instead of the built-in configuration (its groups' tag should
        /// be `web`, the tag of the simulated droplets).
        #[arg(long)]
        config: Option<PathBuf>,
        /// "web": web servers scaled on CPU; "queue": agents scaled from zero on a Drone-like
        /// job queue (with it, --curve is jobs arriving per second).
        #[arg(long, value_enum, default_value_t = DemoScenario::Web)]
        scenario: DemoScenario,
        /// Run the demo's sim and daemon this many times faster than real time (the daemon
        /// keeps the sim's clock, as `run --clock` does); --duration is on that clock.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// Show every group of a running daemon (or one, in detail): size, desired size, bounds in
    /// force, paused, running action, last decision with its reason, last error.
    Status {
        /// One group, in detail.
        group: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show a group's recent decisions, newest first, each with its reason.
    History {
        /// The group.
        group: String,
        /// How many decisions (at most 1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Stop a group acting (it keeps ticking and deciding; kept across restarts).
    Pause {
        /// The group.
        group: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Let a paused group act again.
    Resume {
        /// The group.
        group: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Make a running daemon reload its configuration now.
    Reload {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Convert the original Python do-scaler's configuration into the native format.
    Migrate {
        /// The old base file, do-scaler.cfg.
        cfg: PathBuf,
        /// Where to write the native configuration.
        #[arg(long)]
        out: PathBuf,
    },
    /// Record what a group's ticks observe (listing, the series its rules read, decisions)
    /// to a compressed file, never acting, until --duration has passed or Ctrl-C.
    Record {
        /// The group.
        group: String,
        #[command(flatten)]
        config: ConfigArgs,
        /// The recording to write (gzip of JSON lines; `.rec.gz` by convention).
        #[arg(long)]
        out: PathBuf,
        /// How long to record (default: until interrupted).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        #[command(flatten)]
        clock: ClockArgs,
    },
    /// Run a group file's decisions over a recording (work conserved: the recorded busy vCPU
    /// is spread over the replayed droplets) and compare them with what the group did.
    Replay {
        /// Recordings of one group (`record --out`), or folders of them (`[record]` writes one
        /// file an hour): played in time order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A group file to replay (default: the one the recording holds).
        #[arg(long)]
        config: Option<PathBuf>,
        /// How long a replayed create takes to become active.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        boot: Duration,
        /// Draw recorded against replayed size into this SVG file.
        #[arg(long)]
        chart: Option<PathBuf>,
        /// Print JSON: {"recorded": {…}, "replayed": {…}} with the same fields.
        #[arg(long)]
        json: bool,
    },
    /// Work on the state itself (`state migrate`: SQLite into PostgreSQL).
    State {
        #[command(subcommand)]
        action: StateCommand,
    },
    /// Run the daemon: tick every group, act on decisions, serve the status API.
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        /// Decide and log every decision, but run no action.
        #[arg(long)]
        dry_run: bool,
        /// One tick of every group, wait for the actions it started, exit (1 if any failed).
        #[arg(long)]
        once: bool,
        /// Wall-clock limit of one action run (long enough for a create and a health check at
        /// real DigitalOcean boot times).
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        action_timeout: Duration,
        #[command(flatten)]
        clock: ClockArgs,
    },
    /// Run one tick of every group (or one) and show the decision without acting.
    Plan {
        /// Only this group.
        group: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
        /// How long to keep scraping so that rate rules cover their ranges (default: as long as
        /// the longest range needs; 0s to decide on what the state database already holds).
        #[arg(long, value_parser = parse_duration)]
        wait: Option<Duration>,
        #[command(flatten)]
        clock: ClockArgs,
    },
    /// Print shell completions (the Debian package installs them for bash, zsh and fish).
    Completions {
        /// The shell: bash, zsh, fish (also elvish, powershell).
        shell: clap_complete::Shell,
    },
    /// Print the man page do-scaler(1); with --out-dir, write it and one page per subcommand
    /// (do-scaler-run(1) and so on) there, as the Debian package installs them.
    Man {
        /// The folder to write every page into.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Evaluate an expression against capture files or live metrics endpoints.
    Query {
        /// The expression (the PromQL subset rules are written in).
        expr: String,
        /// Endpoints to scrape, such as http://10.110.0.5:9110/metrics.
        #[arg(
            long = "target",
            required_unless_present = "files",
            conflicts_with = "files"
        )]
        targets: Vec<String>,
        /// Capture files, oldest first.
        #[arg(long = "file")]
        files: Vec<PathBuf>,
        /// Time between captures or scrapes.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        gap: Duration,
        /// Timeout of one scrape.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

/// What `do-scaler state` does.
#[derive(Subcommand)]
enum StateCommand {
    /// Copy a SQLite state file into an empty PostgreSQL database (once, with the daemon
    /// stopped), before every node's `state` points at PostgreSQL.
    Migrate {
        /// The SQLite state file.
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL URL (no password: it comes from the `postgres-password` credential
        /// or a passfile).
        #[arg(long)]
        to: String,
    },
}

/// Options of `do-scaler sim`.
#[derive(Args)]
struct SimArgs {
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The token the API accepts.
    #[arg(long, default_value = "sim-token")]
    token: String,
    /// Droplets that exist at start, already active.
    #[arg(long, default_value_t = 0)]
    droplets: u32,
    /// The tag of the seeded droplets.
    #[arg(long, default_value = "web")]
    tag: String,
    /// Age of the seeded droplets.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    age: Duration,
    /// Give the seeded droplets the managed-by tag of this instance (as if do-scaler made them).
    #[arg(long, num_args = 0..=1, default_missing_value = "default")]
    managed: Option<String>,
    /// Size of the seeded droplets.
    #[arg(long, default_value = "s-2vcpu-4gb")]
    size: String,
    /// Time from create to active.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    boot_delay: Duration,
    /// Run the sim's clock this many times faster than real time (boots, demand curves,
    /// counters, timestamps); daemons keep up with `--clock URL` (the sim prints it).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Seed for injected faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// DigitalOcean's rate limits (250/minute, 5,000/hour).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    rate_limit: OnOff,
    /// Port of each droplet's metrics endpoint.
    #[arg(long, default_value_t = 9110)]
    agent_port: u16,
    /// Ports each droplet accepts TCP connections on (for health checks).
    #[arg(long, value_delimiter = ',', default_value = "22,80")]
    open_ports: Vec<u16>,
    /// Total demand in vCPUs: N, step:BEFORE:AFTER:AT, sine:BASE:AMPLITUDE:PERIOD or csv:FILE
    /// (with --workload queue: jobs arriving per second, same forms).
    #[arg(long, default_value = "1")]
    demand: String,
    /// What the demand is: "cpu" (vCPUs of work shared by the droplets) or "queue" (jobs that
    /// wait in a queue and run on droplets; serves /drone/metrics and /gitlab/metrics).
    #[arg(long, value_enum, default_value_t = Workload::Cpu)]
    workload: Workload,
    /// With --workload queue: how long one job runs.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    job_seconds: Duration,
    /// With --workload queue: how many jobs one droplet runs at once.
    #[arg(long, default_value_t = 2)]
    concurrency: u32,
    /// The account's droplet limit (creates past it answer 422).
    #[arg(long, default_value_t = 10_000)]
    droplet_limit: u64,
    /// Share (0-1) of API answers that are 500 or 503.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Share (0-1) of API answers that are 429.
    #[arg(long, default_value_t = 0.0)]
    throttle_rate: f64,
    /// Latency added to every API answer.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    latency: Duration,
    /// The next N creates succeed but answer 500.
    #[arg(long, default_value_t = 0)]
    create_500: u32,
    /// Deletes are carried out but answered only after this long.
    #[arg(long, value_parser = parse_duration)]
    delete_hang: Option<Duration>,
    /// Share (0-1) of droplets whose metrics endpoint hangs.
    #[arg(long, default_value_t = 0.0)]
    scrape_hang: f64,
    /// Share (0-1) of droplets whose metrics endpoint answers garbage.
    #[arg(long, default_value_t = 0.0)]
    scrape_garbage: f64,
    /// How long listings lag creates and deletes, as the real API's do.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    list_lag: Duration,
    /// Links (pagination, create actions) name the real API's host, as the real API does,
    /// instead of the sim's address: for testing a client's own rebasing.
    #[arg(long)]
    public_links: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    Cpu,
    Queue,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DemoScenario {
    Web,
    Queue,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    do_scaler::config::duration::parse_duration(text).map_err(|e| e.to_string())
}

impl SimArgs {
    fn options(self) -> Result<SimOptions> {
        Ok(SimOptions {
            listen: self.listen,
            token: self.token,
            seed_droplets: self.droplets,
            seed_tag: self.tag,
            seed_age: self.age,
            seed_managed_tag: self.managed.map(|instance| format!("do-scaler:{instance}")),
            seed_size: self.size,
            boot_delay: self.boot_delay,
            seed: self.seed,
            rate_limit: (self.rate_limit == OnOff::On).then_some((250, 5000)),
            agent_port: self.agent_port,
            open_ports: self.open_ports,
            demand: Demand::parse(&self.demand)?,
            droplet_limit: self.droplet_limit,
            faults: Faults {
                error_rate: self.error_rate,
                throttle_rate: self.throttle_rate,
                latency: self.latency,
                create_succeeds_then_500: self.create_500,
                delete_hang: self.delete_hang,
                scrape_hang_share: self.scrape_hang,
                scrape_garbage_share: self.scrape_garbage,
                list_lag: self.list_lag,
                ..Faults::default()
            },
            clock: if self.speed == 1.0 {
                Arc::new(SystemClock)
            } else {
                Arc::new(do_scaler::clock::ScaledClock::new(
                    chrono::Utc::now(),
                    self.speed,
                )?)
            },
            public_links: self.public_links,
            queue: (self.workload == Workload::Queue).then_some(
                do_scaler::sim::queue::QueueSettings {
                    job_seconds: self.job_seconds.as_secs_f64().max(0.001),
                    concurrency: self.concurrency.max(1),
                },
            ),
        })
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DO_SCALER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Prints a command's result on stdout and its diagnostics on stderr; returns its exit code.
fn emit(output: commands::check::CommandOutput) -> ExitCode {
    print!("{}", output.stdout);
    eprint!("{}", output.stderr);
    ExitCode::from(u8::try_from(output.exit_code).unwrap_or(1))
}

/// One malloc arena for the whole process (glibc makes up to eight per core, and the daemon's
/// threads each filled one with scrape buffers): measured on 1,000 droplets, the resident
/// memory drops by a fifth, and the daemon is I/O-bound, so the lock is not contended.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() -> Result<ExitCode> {
    limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run())
}

async fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    // The demo's result is its stdout; its logs stay quiet unless asked for.
    let level = if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    init_logging(cli.log_format, level);
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "do-scaler",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out_dir } => {
            match out_dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    clap_mangen::generate_to(Cli::command(), &dir).with_context(|| {
                        format!("cannot write the man pages into {}", dir.display())
                    })?;
                }
                None => clap_mangen::Man::new(Cli::command())
                    .render(&mut std::io::stdout())
                    .context("cannot write the man page")?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config, online } => {
            let overrides = config.overrides();
            let output = if online {
                commands::check::check_online(&config.config, &overrides, &credentials::process_env)
                    .await
            } else {
                commands::check::check(&config.config, &overrides, &credentials::process_env)
            };
            Ok(emit(output))
        }
        Command::Query {
            expr,
            targets,
            files,
            gap,
            timeout,
        } => {
            let inputs = if files.is_empty() {
                commands::query::Inputs::Targets(targets)
            } else {
                commands::query::Inputs::Files(files)
            };
            let request = commands::query::QueryRequest {
                expr,
                inputs,
                gap,
                timeout,
            };
            let output = commands::query::run(&request).await;
            Ok(emit(output))
        }
        Command::Demo {
            out,
            duration,
            curve,
            config,
            scenario,
            speed,
        } => {
            let request = commands::demo::DemoRequest {
                out,
                duration,
                curve,
                config,
                speed,
                scenario: match scenario {
                    DemoScenario::Web => commands::demo::Scenario::Web,
                    DemoScenario::Queue => commands::demo::Scenario::Queue,
                },
            };
            commands::demo::run(&request).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { group, remote } => {
            Ok(remote.run(commands::remote::Request::Status(group)).await)
        }
        Command::History {
            group,
            limit,
            remote,
        } => Ok(remote
            .run(commands::remote::Request::History { group, limit })
            .await),
        Command::Pause { group, remote } => {
            Ok(remote.run(commands::remote::Request::Pause(group)).await)
        }
        Command::Resume { group, remote } => {
            Ok(remote.run(commands::remote::Request::Resume(group)).await)
        }
        Command::Reload { remote } => Ok(remote.run(commands::remote::Request::Reload).await),
        Command::State {
            action: StateCommand::Migrate { from, to },
        } => {
            let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
            let copied = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
                let url = do_scaler::config::load::parse_state(&to)
                    .map_err(anyhow::Error::msg)?
                    .ok_or_else(|| anyhow::anyhow!("--to must be a postgres:// URL"))?;
                let source = do_scaler::state::Store::open(&from)?;
                let target = do_scaler::state::Store::open_location(
                    &do_scaler::state::Location::Postgres(url),
                    credentials_dir.as_deref(),
                )?;
                let copied = do_scaler::state::copy::sqlite_to_postgres(&source, &target)?;
                let mut out = format!("copied {} into {}:\n", from.display(), target.describe());
                for (table, rows) in copied {
                    out.push_str(&format!("  {table}: {rows} rows\n"));
                }
                out.push_str("now point every node's `state` at it (after upgrading every node)\n");
                Ok(out)
            })
            .await??;
            print!("{copied}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { cfg, out } => {
            let output = commands::migrate::migrate(&cfg, &out);
            Ok(emit(output))
        }
        Command::Run {
            config,
            dry_run,
            once,
            action_timeout,
            clock,
        } => {
            let options = do_scaler::daemon::RunOptions {
                dry_run,
                once,
                ..do_scaler::daemon::RunOptions::new(action_timeout)
            };
            let env: credentials::SharedEnv = Arc::new(credentials::process_env);
            let daemon = match do_scaler::daemon::run::prepare(
                config.config.clone(),
                config.overrides(),
                env,
                clock.clock().await?,
                options,
            )
            .await
            {
                Ok(daemon) => daemon,
                Err(error) => {
                    eprintln!("do-scaler: {error}");
                    return Ok(ExitCode::from(1));
                }
            };
            if once {
                let results = do_scaler::daemon::serve::run_once(&daemon).await;
                for result in &results {
                    println!("{}", result.line);
                }
                return Ok(ExitCode::from(u8::from(results.iter().any(|r| r.failed))));
            }
            let listen = daemon.generation().config.base.status_api.listen;
            let listener = match tokio::net::TcpListener::bind(listen).await {
                Ok(listener) => listener,
                Err(error) => {
                    eprintln!(
                        "do-scaler: cannot listen on {listen} for the status API: {error}; set status_api.listen or --listen"
                    );
                    return Ok(ExitCode::from(1));
                }
            };
            tracing::info!(%listen, "status API listening");
            do_scaler::daemon::serve::serve(daemon, listener, commands::sim::shutdown_signal())
                .await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            group,
            config,
            json,
            wait,
            clock,
        } => {
            let request = commands::plan::PlanRequest {
                config: config.config.clone(),
                overrides: config.overrides(),
                group,
                json,
                wait,
                clock: clock.clock().await?,
            };
            let memories = do_scaler::policy::InMemoryStore::default();
            let output = commands::plan::run(&request, &credentials::process_env, &memories).await;
            Ok(emit(output))
        }
        Command::Record {
            group,
            config,
            out,
            duration,
            clock,
        } => {
            let request = commands::record::RecordRequest {
                config: config.config.clone(),
                overrides: config.overrides(),
                group,
                out,
                duration,
                clock: clock.clock().await?,
            };
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let output = commands::record::run(&request, &credentials::process_env, stop).await;
            Ok(emit(output))
        }
        Command::Replay {
            files,
            config,
            boot,
            chart,
            json,
        } => {
            let request = commands::replay::ReplayRequest {
                files,
                config,
                boot,
                chart,
                json,
            };
            let output = tokio::task::spawn_blocking(move || commands::replay::run(&request))
                .await
                .context("the replay stopped")?;
            Ok(emit(output))
        }
        Command::Sim(args) => {
            commands::sim::run(args.options()?).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
