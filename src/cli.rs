//! The command line: `papercup <command>`, every command with `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Papercup: a self-hosted SIP/WebRTC media gateway with prepaid calling built in.
///
/// Exit codes: 0 success, 1 failure (the message says why), 2 bad usage.
#[derive(Debug, Parser)]
#[command(name = "papercup", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: ./papercup.toml, then /etc/papercup/papercup.toml).
    #[arg(
        long,
        short,
        global = true,
        env = "PAPERCUP_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway on this host until SIGINT/SIGTERM.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate(JsonFlag),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Rate deck: import, look up, list, block destinations.
    #[command(subcommand)]
    Rates(RatesCommand),
    /// Prepaid wallets and their ledgers.
    #[command(subcommand)]
    Wallet(WalletCommand),
    /// Call detail records and live calls.
    #[command(subcommand)]
    Calls(CallsCommand),
    /// The built-in TURN relay: credentials and live allocations.
    #[command(subcommand)]
    Turn(TurnCommand),
    /// Seats: the SIP accounts desk phones register with, each paying from a wallet.
    #[command(subcommand)]
    Seat(SeatCommand),
    /// Registrar bindings: which phones are registered, from where, on which host.
    #[command(subcommand)]
    Registrations(RegistrationsCommand),
    /// The SIP core running on this host.
    #[command(subcommand)]
    Sip(SipCommand),
    /// Trunks: the carriers calls leave through and DIDs arrive from.
    #[command(subcommand)]
    Trunk(TrunkCommand),
    /// Our numbers (DIDs): which trunk brings them, who owns them.
    #[command(subcommand)]
    Number(NumberCommand),
}

/// Trunk settings; on `add`, --provider and --host are required.
#[derive(Debug, Args, Default)]
pub struct TrunkArgs {
    /// Carrier profile: twilio, telnyx or generic.
    #[arg(long)]
    pub provider: Option<String>,
    /// Termination host (name or IP), e.g. acme.pstn.twilio.com.
    #[arg(long)]
    pub host: Option<String>,
    /// Port (default: 5060, or 5061 for TLS).
    #[arg(long)]
    pub port: Option<u16>,
    /// udp, tcp or tls.
    #[arg(long)]
    pub transport: Option<String>,
    /// Secure media (SRTP, SDES) on this trunk: true or false.
    #[arg(long)]
    pub srtp: Option<bool>,
    /// Digest username for 401/407 challenges.
    #[arg(long)]
    pub username: Option<String>,
    /// Read the digest password (first line) from standard input; it is never printed.
    #[arg(long)]
    pub password_stdin: bool,
    /// Caller IDs this trunk may present: E.164 numbers or prefixes ending in '*' (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub caller_ids: Option<Vec<String>>,
    /// Codecs offered, in order (comma-separated; default PCMU,PCMA).
    #[arg(long, value_delimiter = ',')]
    pub codecs: Option<Vec<String>>,
    /// Concurrent calls at most (0 = unlimited).
    #[arg(long)]
    pub max_channels: Option<u32>,
    /// New calls per second at most (default: the carrier's limit, Twilio 30, Telnyx 50).
    #[arg(long)]
    pub max_cps: Option<u32>,
    /// Lower is tried first.
    #[arg(long)]
    pub priority: Option<u32>,
    /// Share among trunks of equal priority.
    #[arg(long)]
    pub weight: Option<u32>,
    /// Addresses (CIDR) the carrier's INVITEs come from (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub inbound_sources: Option<Vec<String>>,
    /// Destinations this trunk carries: E.164 prefixes, comma-separated (+44,+33); the
    /// longest match wins. Empty (the default): every destination.
    #[arg(long, value_delimiter = ',')]
    pub prefixes: Option<Vec<String>>,
}

#[derive(Debug, Subcommand)]
pub enum TrunkCommand {
    /// Add a trunk (enabled).
    Add {
        name: String,
        #[command(flatten)]
        settings: TrunkArgs,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List trunks, by priority.
    List(JsonFlag),
    /// Show one trunk (its password is never shown).
    Show {
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Change the given settings of a trunk.
    Update {
        name: String,
        #[command(flatten)]
        settings: TrunkArgs,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Use the trunk again.
    Enable { name: String },
    /// Stop routing calls through the trunk.
    Disable { name: String },
    /// Remove a trunk that carries no number.
    Remove { name: String },
    /// Each host's view of each trunk: up/down from its OPTIONS probes, latency, last answer.
    Health(JsonFlag),
    /// Send OPTIONS through the trunk and report reachability, latency and the answer; with
    /// --call, place a short test call instead and report its SIP flow.
    Test {
        name: String,
        /// Give up after this many seconds (OPTIONS, or the call's answer).
        #[arg(long, default_value_t = 5)]
        timeout: u64,
        /// Call this number (E.164) through the trunk.
        #[arg(long, value_name = "NUMBER")]
        call: Option<String>,
        /// Caller ID to present on the test call (one of our numbers).
        #[arg(long, value_name = "NUMBER", requires = "call")]
        from: Option<String>,
        /// Seconds to stay on the answered test call before hanging up.
        #[arg(long, default_value_t = 3, requires = "call")]
        seconds: u64,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum NumberCommand {
    /// Add a number (E.164) that reaches us through a trunk.
    Add {
        number: String,
        #[arg(long)]
        trunk: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List our numbers.
    List(JsonFlag),
    /// Give a number to a person or a company, and say where its calls go.
    Assign {
        number: String,
        #[arg(long, value_parser = ["person", "company"])]
        owner_kind: String,
        #[arg(long)]
        owner: String,
        /// Routing target (e.g. seat:desk1).
        #[arg(long, default_value = "")]
        target: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a number.
    Remove { number: String },
}

#[derive(Debug, Subcommand)]
pub enum SipCommand {
    /// Counters (requests by method, responses by class, auth failures, registrations,
    /// active dialogs) and blocked sources of the server running here (asks its admin API
    /// at http.listen).
    Status(JsonFlag),
}

#[derive(Debug, Subcommand)]
pub enum SeatCommand {
    /// Create a seat. Its password is read from standard input with --password-stdin, or
    /// generated and printed once. Only digest hashes (HA1) are stored.
    Create {
        /// The SIP user name (letters, digits, '.', '_', '-').
        username: String,
        /// The wallet its calls are charged to.
        #[arg(long)]
        wallet: i64,
        /// Name shown to callees.
        #[arg(long, default_value = "")]
        display_name: String,
        /// Read the password (first line) from standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Set a new password (standard input with --password-stdin, or generated and printed).
    Passwd {
        username: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Refuse the seat's registrations and calls (and drop its bindings).
    Disable { username: String },
    /// Allow a disabled seat again.
    Enable { username: String },
    /// List seats.
    List(JsonFlag),
}

#[derive(Debug, Subcommand)]
pub enum RegistrationsCommand {
    /// List live bindings (expired ones are not shown).
    List {
        /// Only this seat's.
        #[arg(long)]
        seat: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum TurnCommand {
    /// Mint ephemeral TURN credentials for a user (as the web API does for a signed-in
    /// browser) and print them with the relay's URLs.
    Credentials {
        /// The user id put in the username.
        #[arg(long)]
        user: String,
        /// Validity in seconds (default: turn.credential_ttl_secs).
        #[arg(long)]
        ttl: Option<u64>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List the live allocations and counters of the relay running on this host (asks the
    /// local server's admin API at http.listen).
    Status(JsonFlag),
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON (amounts in integer micro-units) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration, then print where it came from.
    Check,
    /// Print the effective configuration as TOML (database password hidden).
    Show,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// Guess from the header line.
    Auto,
    /// Twilio's outbound voice price CSV.
    Twilio,
    /// prefix,country,description,rate_per_min,connect_fee,increment_first,increment_next
    Papercup,
}

#[derive(Debug, Subcommand)]
pub enum RatesCommand {
    /// Import a rate deck from a CSV file (all rows or none).
    Import {
        /// The CSV file, or - for standard input.
        file: PathBuf,
        /// The CSV layout.
        #[arg(long, value_enum, default_value = "auto")]
        format: FormatArg,
        /// Markup in percent applied to prices and connect fees (e.g. 15 or 12.5).
        #[arg(long, value_name = "PCT")]
        markup: Option<String>,
        /// Fixed amount added to every price per minute (e.g. 0.002).
        #[arg(long, value_name = "AMOUNT")]
        markup_fixed: Option<String>,
        /// Billing increments X/Y for decks without them (Twilio): default 60/60.
        #[arg(long, value_name = "X/Y", default_value = "60/60")]
        increments: String,
        /// Date the rates apply from (YYYY-MM-DD or RFC 3339; default: immediately).
        #[arg(long, value_name = "DATE")]
        effective_from: Option<String>,
        /// Delete the whole current deck first (in the same transaction).
        #[arg(long)]
        replace: bool,
        /// Check the file and report what would be imported; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show the rate a number would be charged now.
    Lookup {
        /// The number, E.164 (+442071234567) or national in billing.default_country.
        number: String,
        /// Caller ID, for caller-class rates.
        #[arg(long, value_name = "NUMBER")]
        from: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List rates, optionally under a prefix.
    List {
        /// Only prefixes starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Block calls to a prefix (premium-rate, satellite…) on every host.
    Block {
        /// E.164 digits.
        prefix: String,
        /// Why (shown in refusals and listings).
        #[arg(long)]
        reason: String,
    },
    /// Remove a prefix from the block-list.
    Unblock {
        /// E.164 digits.
        prefix: String,
    },
    /// List blocked prefixes.
    Blocked(JsonFlag),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OwnerKindArg {
    Person,
    Company,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CreditKindArg {
    Purchase,
    Bonus,
    Refund,
    Adjustment,
}

#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Create a wallet (balance zero) for a person or a company.
    Create {
        /// Who owns it.
        #[arg(long, value_enum)]
        owner_kind: OwnerKindArg,
        /// The owner's id (user id, company id); one wallet per owner.
        #[arg(long)]
        owner: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Only these countries may be called (ISO codes, comma-separated).
        #[arg(long, value_delimiter = ',', value_name = "CC,CC")]
        allow_countries: Option<Vec<String>>,
        /// This wallet's maximum price per minute (default: billing.max_rate_per_min).
        #[arg(long, value_name = "AMOUNT")]
        max_rate: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show a wallet and its latest ledger entries.
    Show {
        /// Wallet id.
        id: i64,
        /// How many ledger entries to show.
        #[arg(long, default_value_t = 20)]
        ledger: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List wallets.
    List(JsonFlag),
    /// Add money (an operator movement in the ledger).
    Credit(MovementArgs),
    /// Take money (never below what live calls hold).
    Debit(MovementArgs),
    /// Change a wallet's destination policy.
    Policy {
        /// Wallet id.
        id: i64,
        /// Only these countries may be called (ISO codes, comma-separated).
        #[arg(
            long,
            value_delimiter = ',',
            value_name = "CC,CC",
            conflicts_with = "all_countries"
        )]
        allow_countries: Option<Vec<String>>,
        /// Allow every country.
        #[arg(long)]
        all_countries: bool,
        /// This wallet's maximum price per minute.
        #[arg(long, value_name = "AMOUNT", conflicts_with = "default_max_rate")]
        max_rate: Option<String>,
        /// Use the global maximum price per minute.
        #[arg(long)]
        default_max_rate: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Args)]
pub struct MovementArgs {
    /// Wallet id.
    pub id: i64,
    /// Amount in the wallet currency (e.g. 25 or 0.50).
    pub amount: String,
    /// Why (kept in the ledger).
    #[arg(long)]
    pub reason: String,
    /// Kind of movement (credit only; a debit is an adjustment or a refund).
    #[arg(long, value_enum)]
    pub kind: Option<CreditKindArg>,
    /// Unique key of this movement: running the command again with the same key changes
    /// nothing (default: a new key each time).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// External reference (payment id, ticket).
    #[arg(long)]
    pub reference: Option<String>,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Subcommand)]
pub enum CallsCommand {
    /// List call detail records, newest first.
    List {
        /// Only this wallet's calls.
        #[arg(long)]
        wallet: Option<i64>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one call detail record.
    Show {
        /// Call id.
        call_id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List live calls (credit reservations) on every host.
    Live(JsonFlag),
}
