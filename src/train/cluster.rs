//! Data-parallel training across processes: one process per machine (or several on one
//! machine, talking over loopback), each training a replica on its own shard of every epoch,
//! with the gradients averaged after each step by a ring all-reduce over TCP.
//!
//! Why not Burn's own: Burn 0.21's `ddp` strategy needs a `DistributedBackend`, which only
//! the CubeCL backends implement (and whose all-reduce only CUDA's server provides).
//! burn-collective 0.21 has a multi-node all-reduce generic over the backend, and we built on
//! it first, but it cannot run a training loop: every global all-reduce ends in
//! `SyncService::sync`, which clears a *copy* of its list of synced peers
//! (`global/node/sync.rs`, `let mut syncing_peers = ....to_vec(); ... syncing_peers.clear()`),
//! so the list keeps growing and the second all-reduce of a registration waits forever
//! (observed: two `train` ranks over loopback stopped at the second step, both in
//! `burn_collective::api::all_reduce`). Burn removed burn-collective after 0.21, so no fix
//! will come for our pin. The ring here is the textbook one: reduce-scatter then all-gather,
//! `2 (N - 1) / N` of the gradients sent per rank and step.
//!
//! How a run of `nodes` processes is laid out:
//! - every process runs `train` with the same configuration (`nodes=N`), its own `rank=`
//!   (`0..N`) and `out=`, and names rank 0 with `master=HOST:PORT`; rank 0 listens there;
//! - at the start the ranks meet at rank 0, which checks that they run the same configuration
//!   and tells each where its neighbour in the ring listens;
//! - rank `r` trains on positions `[r·n/N, (r+1)·n/N)` of each epoch's order (`n` images; the
//!   last `n mod N` are left out so that every rank takes the same number of steps), which is
//!   how Burn's in-process `devices=N` splits an epoch;
//! - after each backward pass the ranks average their gradients (one all-reduce of all of
//!   them, flattened in the module's order), so every replica takes the same optimiser step;
//!   with self-distributed labels each rank's batch mean of the group probabilities rides
//!   along, so every rank's window of E[p] holds the whole global batch, as `devices=N`'s;
//! - at the end of each epoch they average their BatchNorm running statistics, as Burn's
//!   in-process replicas do through `RunningState`, so every rank checkpoints the same model.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::data::dataloader::Progress;
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{
    EventProcessorTraining, InferenceStep, Interrupter, Learner, LearnerEvent,
    LearningComponentsTypes, SupervisedLearningStrategy, SupervisedTrainingEventProcessor,
    TrainLoader, TrainingBackend, TrainingComponents, TrainingItem, TrainingModel, ValidLoader,
};

use crate::objective::labels::GroupLabeler;
use crate::util::error::ConfigError;

/// How long a rank waits for the others to start and meet (they may start minutes apart).
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a rank waits for a neighbour within an all-reduce before it gives up on the run:
/// longer than any step, validation pass or checkpoint a rank may be ahead by.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(3600);

/// Where this process sits in a multi-process run: its rank and rank 0's address. The number
/// of processes is the run's `nodes` (in its configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLaunch {
    /// This process, `0..nodes`. Rank 0 is the master: the others meet there.
    pub rank: usize,
    /// Rank 0's `HOST:PORT`, the same on every rank; rank 0 listens on its port.
    pub master: String,
    /// The port of `master`, parsed once by [`NodeLaunch::new`].
    master_port: u16,
}

impl NodeLaunch {
    /// Checks the keys of rank `rank` of `nodes`, naming the key at fault.
    pub fn new(nodes: usize, rank: usize, master: &str) -> Result<Self, ConfigError> {
        if nodes < 2 {
            return Err(ConfigError::new("nodes", "at least 2 with rank=", nodes.to_string()));
        }
        if rank >= nodes {
            return Err(ConfigError::new(
                "rank",
                format!("a rank in 0..{nodes} (nodes={nodes})"),
                rank.to_string(),
            ));
        }
        let master_port = port_of("master", master)?;
        Ok(Self { rank, master: master.to_string(), master_port })
    }

    fn master_port(&self) -> u16 {
        self.master_port
    }
}

/// The port of `HOST:PORT` (a non-empty host, a port in 1..=65535), for key `key`.
fn port_of(key: &str, value: &str) -> Result<u16, ConfigError> {
    let expected = "HOST:PORT, e.g. 127.0.0.1:29500";
    let bad = || ConfigError::new(key, expected, value);
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|&p| p > 0).ok_or_else(bad)?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok(port)
}

/// The bytes that open every connection, so a stray client (or another program on the port)
/// is an error and not garbage.
const MAGIC: &[u8; 8] = b"GFRING01";

fn io_err(what: &str, e: std::io::Error) -> String {
    format!("{what}: {e}")
}

fn write_u64(stream: &mut TcpStream, value: u64) -> std::io::Result<()> {
    stream.write_all(&value.to_le_bytes())
}

fn read_u64(stream: &mut TcpStream) -> std::io::Result<u64> {
    let mut bytes = [0u8; 8];
    stream.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

fn write_text(stream: &mut TcpStream, text: &str) -> std::io::Result<()> {
    write_u64(stream, text.len() as u64)?;
    stream.write_all(text.as_bytes())
}

fn read_text(stream: &mut TcpStream) -> std::io::Result<String> {
    let len = read_u64(stream)?;
    if len > 1 << 16 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "message too long"));
    }
    let mut bytes = vec![0u8; len as usize];
    stream.read_exact(&mut bytes)?;
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

fn read_magic(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut magic = [0u8; 8];
    stream.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a groupface rank (wrong greeting)",
        ));
    }
    Ok(())
}

/// A rank's two links in the ring: to the next rank (`(r + 1) mod N`), which it sends to,
/// and from the previous one, which it receives from.
pub struct Ring {
    rank: usize,
    nodes: usize,
    next: TcpStream,
    prev: TcpStream,
    /// All-reduces so far; each message carries the count, so ranks that fell out of step are
    /// an error and not a silent mix of two steps.
    round: u64,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("rank", &self.rank)
            .field("nodes", &self.nodes)
            .field("round", &self.round)
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// Meets the other ranks and links the ring. Rank 0 listens on the master port, takes
    /// every other rank's greeting (its rank, the run's size, a fingerprint of its
    /// configuration and the port it listens on), checks them and answers with the table of
    /// listening addresses; then each rank connects to the next and accepts the previous.
    /// `fingerprint` (of the configuration) and `epoch` (the first epoch to train, later than
    /// 1 when resuming) must be equal on every rank.
    pub fn join(
        launch: &NodeLaunch,
        nodes: usize,
        fingerprint: u64,
        epoch: usize,
    ) -> Result<Self, String> {
        let rank = launch.rank;
        let deadline = Instant::now() + JOIN_TIMEOUT;
        let (listener, table) = if rank == 0 {
            let listener = listen_master(launch)?;
            let table = Self::gather(&listener, launch, nodes, (fingerprint, epoch), deadline)?;
            (listener, table)
        } else {
            let listener = TcpListener::bind(("0.0.0.0", 0))
                .map_err(|e| io_err("cannot open a port to listen on", e))?;
            let table = Self::greet(&listener, launch, nodes, (fingerprint, epoch), deadline)?;
            (listener, table)
        };
        let next_rank = (rank + 1) % nodes;
        let prev_rank = (rank + nodes - 1) % nodes;
        let mut next = connect(table[next_rank], deadline).map_err(|e| {
            format!("rank {rank} cannot reach rank {next_rank} at {}: {e}", table[next_rank])
        })?;
        next.write_all(MAGIC)
            .and_then(|_| write_u64(&mut next, 1))
            .and_then(|_| write_u64(&mut next, rank as u64))
            .map_err(|e| io_err(&format!("rank {rank}: linking to rank {next_rank}"), e))?;
        let mut prev = accept(&listener, deadline)
            .map_err(|e| format!("rank {rank}: rank {prev_rank} did not link: {e}"))?;
        let linked = read_magic(&mut prev)
            .and_then(|_| read_u64(&mut prev))
            .and_then(|kind| {
                if kind == 1 {
                    read_u64(&mut prev)
                } else {
                    Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a link"))
                }
            })
            .map_err(|e| io_err(&format!("rank {rank}: link from rank {prev_rank}"), e))?;
        if linked != prev_rank as u64 {
            return Err(format!(
                "rank {rank}: expected the link of rank {prev_rank}, rank {linked} came"
            ));
        }
        for stream in [&next, &prev] {
            stream.set_nodelay(true).ok();
            stream.set_read_timeout(Some(LINK_TIMEOUT)).ok();
            stream.set_write_timeout(Some(LINK_TIMEOUT)).ok();
        }
        Ok(Self { rank, nodes, next, prev, round: 0 })
    }

    /// Rank 0: collects the greetings of ranks 1..N and answers each with the table, or with
    /// what is wrong. Returns the table (rank 0's own entry is the master address).
    fn gather(
        listener: &TcpListener,
        launch: &NodeLaunch,
        nodes: usize,
        (fingerprint, epoch): (u64, usize),
        deadline: Instant,
    ) -> Result<Vec<SocketAddr>, String> {
        let master = resolve(&launch.master)?;
        let mut table: Vec<Option<SocketAddr>> = vec![None; nodes];
        table[0] = Some(master);
        let mut greeted: Vec<(usize, TcpStream)> = Vec::new();
        let mut problem: Option<String> = None;
        // Once the run is refused, the ranks still on their way are told why for a few more
        // seconds; a rank left waiting when rank 0 exits would only see its connection reset.
        let mut arrived = 0;
        let mut accept_until = deadline;
        while arrived + 1 < nodes {
            let mut stream = match accept(listener, accept_until) {
                Ok(stream) => stream,
                Err(_) if problem.is_some() => break,
                Err(e) => return Err(missing_ranks(&table, e)),
            };
            let peer_ip = stream.peer_addr().map(|a| a.ip()).map_err(|e| io_err("rank 0", e))?;
            // Not a rank: ignore it and keep waiting for the real ones.
            let Ok(hello) = read_hello(&mut stream) else {
                continue;
            };
            arrived += 1;
            let complaint = match &problem {
                Some(problem) => Some(problem.clone()),
                None => hello_complaint(&hello, &table, (fingerprint, epoch)),
            };
            if let Some(complaint) = complaint {
                let _ = write_refusal(&mut stream, &complaint);
                if problem.is_none() {
                    problem = Some(complaint);
                    accept_until = deadline.min(Instant::now() + Duration::from_secs(10));
                }
                continue;
            }
            table[hello.rank] = Some(SocketAddr::new(peer_ip, hello.port as u16));
            greeted.push((hello.rank, stream));
        }
        answer_greetings(table, greeted, problem)
    }

    /// Ranks 1..N: greets rank 0 (retrying until it listens) and reads the table.
    fn greet(
        listener: &TcpListener,
        launch: &NodeLaunch,
        nodes: usize,
        (fingerprint, epoch): (u64, usize),
        deadline: Instant,
    ) -> Result<Vec<SocketAddr>, String> {
        let rank = launch.rank;
        let master = resolve(&launch.master)?;
        let port = listener.local_addr().map_err(|e| io_err("listening port", e))?.port();
        let mut stream = connect(master, deadline).map_err(|e| {
            format!("rank {rank} cannot reach the master at {}: {e}", launch.master)
        })?;
        stream
            .write_all(MAGIC)
            .and_then(|_| write_u64(&mut stream, 0))
            .and_then(|_| write_u64(&mut stream, rank as u64))
            .and_then(|_| write_u64(&mut stream, nodes as u64))
            .and_then(|_| write_u64(&mut stream, fingerprint))
            .and_then(|_| write_u64(&mut stream, epoch as u64))
            .and_then(|_| write_u64(&mut stream, port as u64))
            .map_err(|e| io_err(&format!("rank {rank}: greeting the master"), e))?;
        let remaining =
            deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        stream.set_read_timeout(Some(remaining)).ok();
        let answer = read_u64(&mut stream).and_then(|status| Ok((status, read_text(&mut stream)?)));
        let (status, text) = answer.map_err(|e| {
            let what = format!(
                "rank {rank}: waiting for the other ranks at the master (if rank 0 refused the \
                 run, its output says why)"
            );
            io_err(&what, e)
        })?;
        if status != 0 {
            return Err(format!("rank 0 refused the run: {text}"));
        }
        let table: Vec<SocketAddr> = text.split(' ').filter_map(|a| a.parse().ok()).collect();
        if table.len() != nodes {
            return Err(format!("rank {rank}: the master sent a table of {} ranks", table.len()));
        }
        Ok(table)
    }

    // ANCHOR: ring
    /// Replaces `data` by its mean over the ranks, identical to the bit on every rank.
    pub fn all_reduce_mean(&mut self, data: &mut [f32]) -> Result<(), String> {
        self.all_reduce_sum(data)?;
        let n = self.nodes as f32;
        data.iter_mut().for_each(|v| *v /= n);
        Ok(())
    }

    /// Replaces `data` by its sum over the ranks, identical to the bit on every rank.
    ///
    /// Ring all-reduce: in `N - 1` rounds of reduce-scatter each rank sends one of `N` chunks
    /// to the next rank and adds the chunk it receives from the previous, so that rank `r`
    /// ends with the whole sum of chunk `(r + 1) mod N`; in `N - 1` rounds of all-gather the
    /// sums travel once around the ring.
    pub fn all_reduce_sum(&mut self, data: &mut [f32]) -> Result<(), String> {
        let (n, rank) = (self.nodes, self.rank);
        let len = data.len();
        let bounds = |k: usize| (k * len / n, (k + 1) * len / n);
        for phase in 0..2 {
            for step in 0..n - 1 {
                // Reduce-scatter sends chunk r - s and receives r - s - 1; all-gather sends
                // the finished chunk r + 1 - s and receives r - s.
                let (send, recv) = if phase == 0 {
                    ((rank + n - step) % n, (rank + 2 * n - step - 1) % n)
                } else {
                    ((rank + 1 + n - step) % n, (rank + n - step) % n)
                };
                let (a, b) = bounds(send);
                let outgoing: Vec<u8> = data[a..b].iter().flat_map(|v| v.to_le_bytes()).collect();
                let (a, b) = bounds(recv);
                let mut incoming = vec![0u8; (b - a) * 4];
                let tag = (self.round * 2 + phase as u64) * n as u64 + step as u64;
                let (next, prev) = (&mut self.next, &mut self.prev);
                let received = std::thread::scope(|scope| {
                    let sender = scope.spawn(move || -> std::io::Result<()> {
                        write_u64(next, tag)?;
                        write_u64(next, outgoing.len() as u64)?;
                        next.write_all(&outgoing)
                    });
                    let received = (|| -> std::io::Result<()> {
                        let (their_tag, len) = (read_u64(prev)?, read_u64(prev)?);
                        if their_tag != tag || len != incoming.len() as u64 {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                format!(
                                    "out of step (message {their_tag} of {len} bytes, expected \
                                     {tag} of {})",
                                    incoming.len()
                                ),
                            ));
                        }
                        prev.read_exact(&mut incoming)
                    })();
                    let sent = sender.join().unwrap_or_else(|_| {
                        Err(std::io::Error::other("the sending thread panicked"))
                    });
                    sent.map_err(|e| io_err(&format!("rank {rank}: sending to the next rank"), e))?;
                    received.map_err(|e| {
                        io_err(&format!("rank {rank}: receiving from the previous rank"), e)
                    })
                });
                received?;
                let values =
                    incoming.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                if phase == 0 {
                    data[a..b].iter_mut().zip(values).for_each(|(v, x)| *v += x);
                } else {
                    data[a..b].iter_mut().zip(values).for_each(|(v, x)| *v = x);
                }
            }
        }
        self.round += 1;
        Ok(())
    }
    // ANCHOR_END: ring
}

/// A rank's greeting to rank 0 (kind 0), as sent by [`Ring::greet`].
struct Hello {
    rank: usize,
    nodes: u64,
    fingerprint: u64,
    epoch: u64,
    /// Where the rank listens for its link from the previous rank.
    port: u64,
}

/// Reads a greeting after its magic; a ring link (kind 1) this early is not one.
fn read_hello(stream: &mut TcpStream) -> std::io::Result<Hello> {
    read_magic(stream)?;
    if read_u64(stream)? != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a link before the table",
        ));
    }
    Ok(Hello {
        rank: read_u64(stream)? as usize,
        nodes: read_u64(stream)?,
        fingerprint: read_u64(stream)?,
        epoch: read_u64(stream)?,
        port: read_u64(stream)?,
    })
}

/// What is wrong with `hello` for rank 0, whose `table` holds the ranks greeted so far.
fn hello_complaint(
    hello: &Hello,
    table: &[Option<SocketAddr>],
    (fingerprint, epoch): (u64, usize),
) -> Option<String> {
    let (rank, nodes) = (hello.rank, table.len());
    if hello.nodes as usize != nodes {
        return Some(format!("rank {rank} has nodes={}, rank 0 has nodes={nodes}", hello.nodes));
    }
    match check_arrival(rank, nodes, |r| table[r].is_some(), hello.fingerprint, fingerprint) {
        Err(Refusal::OutOfRange) => {
            Some(format!("a process says rank={rank}; ranks are 1..{nodes} besides rank 0"))
        }
        Err(Refusal::Duplicate) => Some(format!("two processes say rank={rank}")),
        Err(Refusal::OtherConfiguration) => Some(other_configuration(rank)),
        Ok(()) if hello.epoch as usize != epoch => Some(format!(
            "rank {rank} starts at epoch {}, rank 0 at epoch {epoch}; \
             resume every rank from the same checkpoint (remove the newer ones)",
            hello.epoch
        )),
        Ok(()) => None,
    }
}

/// Rank 0's error when the join timed out, naming the ranks that never greeted it.
fn missing_ranks(table: &[Option<SocketAddr>], e: std::io::Error) -> String {
    let missing: Vec<String> =
        (1..table.len()).filter(|r| table[*r].is_none()).map(|r| r.to_string()).collect();
    format!("rank 0: ranks {} did not arrive: {e}", missing.join(", "))
}

/// Rank 0's answer to every greeted rank: the `problem` that refuses the run, or the table.
fn answer_greetings(
    table: Vec<Option<SocketAddr>>,
    greeted: Vec<(usize, TcpStream)>,
    problem: Option<String>,
) -> Result<Vec<SocketAddr>, String> {
    if let Some(problem) = problem {
        for (_, mut stream) in greeted {
            let _ = write_refusal(&mut stream, &problem);
        }
        return Err(problem);
    }
    let table: Vec<SocketAddr> =
        table.into_iter().map(|a| a.expect("every rank greeted")).collect();
    let text = table.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" ");
    for (rank, mut stream) in greeted {
        write_u64(&mut stream, 0)
            .and_then(|_| write_text(&mut stream, &text))
            .map_err(|e| io_err(&format!("rank 0: sending the table to rank {rank}"), e))?;
    }
    Ok(table)
}

/// Rank 0's listener on the master port, where every rank meets it.
fn listen_master(launch: &NodeLaunch) -> Result<TcpListener, String> {
    let port = launch.master_port();
    TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
        format!("master: rank 0 cannot listen on port {port} ({e}); choose another port")
    })
}

/// Why rank 0 turns a rank away at the master port, in either rendezvous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// A rank outside `1..nodes`.
    OutOfRange,
    /// A rank that already came.
    Duplicate,
    /// A configuration fingerprint other than rank 0's.
    OtherConfiguration,
}

/// Rank 0's checks of a rank arriving at the master port, in the order both rendezvous report.
fn check_arrival(
    rank: usize,
    nodes: usize,
    seen: impl Fn(usize) -> bool,
    their_fingerprint: u64,
    fingerprint: u64,
) -> Result<(), Refusal> {
    if rank == 0 || rank >= nodes {
        Err(Refusal::OutOfRange)
    } else if seen(rank) {
        Err(Refusal::Duplicate)
    } else if their_fingerprint != fingerprint {
        Err(Refusal::OtherConfiguration)
    } else {
        Ok(())
    }
}

/// The text of [`Refusal::OtherConfiguration`] for `rank`, the same in both rendezvous.
fn other_configuration(rank: usize) -> String {
    format!(
        "rank {rank}'s configuration differs from rank 0's (every rank must run the same \
         configuration; only out= may differ)"
    )
}

/// Rank 0's refusal of the run (status 1 and why), answered in place of a table or an epoch.
fn write_refusal(stream: &mut TcpStream, why: &str) -> std::io::Result<()> {
    write_u64(stream, 1).and_then(|_| write_text(stream, why))
}

/// The checkpoint every rank of a resumed run continues from: the newest epoch whose complete
/// checkpoint every rank holds (`held`, this rank's complete checkpoints), or `None` when they
/// share none and the run starts again. A rank killed while writing a checkpoint may hold one
/// epoch fewer than the others, who still keep the one before (burn-train keeps the last two),
/// so the ranks meet there instead of refusing to start. Rank 0 listens on the master port,
/// takes every rank's list, answers each with the epoch and closes the port again before the
/// ring is formed; the ranks must run the same configuration (`fingerprint`).
pub fn agree_on_checkpoint(
    launch: &NodeLaunch,
    nodes: usize,
    fingerprint: u64,
    held: &[usize],
) -> Result<Option<usize>, String> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    if launch.rank == 0 {
        let listener = listen_master(launch)?;
        gather_checkpoints(&listener, nodes, fingerprint, held, deadline)
    } else {
        send_checkpoints(launch, fingerprint, held, deadline)
    }
}

/// Reads a resuming rank's message after the greeting: its rank, fingerprint and complete
/// checkpoints.
fn read_checkpoints(stream: &mut TcpStream) -> std::io::Result<(usize, u64, Vec<usize>)> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    read_magic(stream)?;
    if read_u64(stream)? != 2 {
        return Err(invalid("expected a rank resuming the run"));
    }
    let (rank, fingerprint) = (read_u64(stream)?, read_u64(stream)?);
    let count = read_u64(stream)?;
    if count > 1 << 20 {
        return Err(invalid("too many checkpoints"));
    }
    let epochs = (0..count)
        .map(|_| read_u64(stream).map(|e| e as usize))
        .collect::<std::io::Result<Vec<usize>>>()?;
    Ok((rank as usize, fingerprint, epochs))
}

/// Rank 0 of [`agree_on_checkpoint`]: takes the checkpoints of ranks 1..N, answers each with
/// the newest epoch all hold (0 for none), or with what is wrong.
fn gather_checkpoints(
    listener: &TcpListener,
    nodes: usize,
    fingerprint: u64,
    held: &[usize],
    deadline: Instant,
) -> Result<Option<usize>, String> {
    let mut common: Vec<usize> = held.to_vec();
    let mut streams: Vec<TcpStream> = Vec::new();
    let mut seen = vec![false; nodes];
    seen[0] = true;
    let mut problem: Option<String> = None;
    while streams.len() + 1 < nodes {
        let mut stream = accept(listener, deadline)
            .map_err(|e| format!("rank 0: not every rank came to resume the run: {e}"))?;
        // Not a resuming rank (a stray client, or a rank that did not give resume=true, whose
        // greeting the ring answers): ignore it and keep waiting.
        let Ok((their_rank, their_fingerprint, epochs)) = read_checkpoints(&mut stream) else {
            continue;
        };
        if problem.is_none() {
            let seen = |r: usize| seen[r];
            problem = match check_arrival(their_rank, nodes, seen, their_fingerprint, fingerprint) {
                Err(Refusal::OutOfRange | Refusal::Duplicate) => {
                    Some(format!("a process resumes as rank={their_rank} of nodes={nodes}"))
                }
                Err(Refusal::OtherConfiguration) => Some(other_configuration(their_rank)),
                Ok(()) => None,
            };
        }
        if their_rank < nodes {
            seen[their_rank] = true;
        }
        common.retain(|e| epochs.contains(e));
        streams.push(stream);
    }
    let agreed = common.iter().copied().max();
    for mut stream in streams {
        let sent = match &problem {
            Some(problem) => write_refusal(&mut stream, problem),
            None => write_u64(&mut stream, 0)
                .and_then(|_| write_u64(&mut stream, agreed.unwrap_or(0) as u64)),
        };
        sent.map_err(|e| io_err("rank 0: answering a resuming rank", e))?;
    }
    match problem {
        Some(problem) => Err(problem),
        None => Ok(agreed),
    }
}

/// Ranks 1..N of [`agree_on_checkpoint`]: send the complete checkpoints to rank 0 and read
/// the epoch to resume from.
fn send_checkpoints(
    launch: &NodeLaunch,
    fingerprint: u64,
    held: &[usize],
    deadline: Instant,
) -> Result<Option<usize>, String> {
    let rank = launch.rank;
    let master = resolve(&launch.master)?;
    let mut stream = connect(master, deadline)
        .map_err(|e| format!("rank {rank} cannot reach the master at {}: {e}", launch.master))?;
    let mut message = MAGIC.to_vec();
    for value in [2, rank as u64, fingerprint, held.len() as u64] {
        message.extend_from_slice(&value.to_le_bytes());
    }
    for &epoch in held {
        message.extend_from_slice(&(epoch as u64).to_le_bytes());
    }
    stream
        .write_all(&message)
        .map_err(|e| io_err(&format!("rank {rank}: telling the master its checkpoints"), e))?;
    stream.set_read_timeout(Some(JOIN_TIMEOUT)).ok();
    let status = read_u64(&mut stream)
        .map_err(|e| io_err(&format!("rank {rank}: waiting for the other ranks to resume"), e))?;
    if status != 0 {
        let why = read_text(&mut stream).unwrap_or_default();
        return Err(format!("rank 0 refused the run: {why}"));
    }
    read_u64(&mut stream)
        .map(|epoch| (epoch > 0).then_some(epoch as usize))
        .map_err(|e| io_err(&format!("rank {rank}: reading the checkpoint to resume"), e))
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    let addresses: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| format!("master={address}: the host does not resolve ({e})"))?
        .collect();
    // IPv4 first: a name such as `localhost` may resolve to ::1 while rank 0 listens on IPv4.
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addresses.first())
        .copied()
        .ok_or_else(|| format!("master={address}: no address"))
}

/// Connects to `address`, retrying every 100 ms until `deadline` (the other side may not be
/// listening yet).
fn connect(address: SocketAddr, deadline: Instant) -> std::io::Result<TcpStream> {
    loop {
        match TcpStream::connect_timeout(&address, Duration::from_secs(5)) {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Accepts one connection, giving up at `deadline`.
fn accept(listener: &TcpListener, deadline: Instant) -> std::io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                let remaining = deadline.saturating_duration_since(Instant::now());
                stream.set_read_timeout(Some(remaining.max(Duration::from_secs(1))))?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("nothing came within {} s", JOIN_TIMEOUT.as_secs()),
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The Learner strategy of one rank of a multi-process run. The training loader it is given
/// must already be this rank's shard (see [`crate::data::loader::EpochLoader::shard`]).
pub struct CollectiveStrategy<B: AutodiffBackend> {
    device: B::Device,
    nodes: usize,
    launch: NodeLaunch,
    fingerprint: u64,
    /// Why this rank stopped because of the others (a rank that stopped, a lost link); read
    /// by the caller once the Learner returns.
    failure: Arc<Mutex<Option<String>>>,
    /// The model's labeler and its number of groups K, with self-distributed labels: the
    /// ranks exchange their batch means with the gradients so that every rank's E[p] window
    /// holds the whole global batch, as the replicas of `devices=N` share theirs.
    labels: Option<(Arc<Mutex<GroupLabeler>>, usize)>,
}

impl<B: AutodiffBackend> CollectiveStrategy<B> {
    /// The strategy of `launch.rank` among `nodes` processes, training on `device`;
    /// `fingerprint` identifies the configuration, which must be the same on every rank.
    pub fn new(device: B::Device, nodes: usize, launch: NodeLaunch, fingerprint: u64) -> Self {
        Self {
            device,
            nodes,
            launch,
            fingerprint,
            failure: Arc::new(Mutex::new(None)),
            labels: None,
        }
    }

    /// Shares the E[p] window of `labeler` (the trained model's, self-distributed labels with
    /// window rows of `width` values: [`GroupLabeler::row_width`]) among the ranks.
    pub fn with_labels(mut self, labeler: Arc<Mutex<GroupLabeler>>, width: usize) -> Self {
        self.labels = Some((labeler, width));
        self
    }

    /// This rank's part of the step's label exchange: `nodes` slots of `1 + K` values, a flag
    /// and a batch mean, zero except at this rank's slot (empty without shared labels).
    fn label_slots(&self) -> Vec<f32> {
        let Some((labeler, k)) = &self.labels else {
            return Vec::new();
        };
        let mut slots = vec![0.0; self.nodes * (k + 1)];
        if let Ok(labeler) = labeler.lock() {
            // One replica per process: the step's one batch mean.
            if let [mean] = labeler.step_means() {
                if mean.len() == *k {
                    let slot = &mut slots[self.launch.rank * (k + 1)..][..k + 1];
                    slot[0] = 1.0;
                    slot[1..].copy_from_slice(mean);
                }
            }
        }
        slots
    }

    /// Ends the step of the labeler with every rank's batch mean, from the summed slots of
    /// [`label_slots`](Self::label_slots). Each slot is one rank's values plus zeros, so it
    /// arrives unchanged, and every rank settles the same means.
    fn settle_labels(&self, summed: &[f32]) {
        let Some((labeler, k)) = &self.labels else {
            return;
        };
        let means =
            summed.chunks_exact(k + 1).filter(|s| s[0] > 0.5).map(|s| s[1..].to_vec()).collect();
        if let Ok(mut labeler) = labeler.lock() {
            labeler.settle(means);
        }
    }

    /// Where the reason this rank stopped because of the others will be, once training
    /// returns.
    pub fn failure_slot(&self) -> Arc<Mutex<Option<String>>> {
        self.failure.clone()
    }

    fn fail(&self, reason: String) {
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(reason);
        }
    }
}

/// A flat tensor's values on the host, as f32 (the wire format; a bf16 or f16 run is
/// widened and narrowed again).
fn host<B: Backend>(flat: Tensor<B, 1>) -> Result<Vec<f32>, String> {
    flat.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| format!("reading gradients to send: {e:?}"))
}

/// Averages `grads` of `module`'s trainable parameters over the ranks in one all-reduce
/// (flattened in the module's visiting order, which every rank shares; parameter ids are
/// drawn at random per process and cannot order them), with `stop` (this rank wants to
/// stop) and `extra` riding along. A parameter without a gradient on this rank contributes
/// zeros. Returns the averaged gradients, whether any rank wants to stop, and the sum of the
/// ranks' `extra` (of one length on every rank; where only one rank puts a value and the
/// others zeros, that value arrives unchanged).
pub fn all_reduce_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    ring: &mut Ring,
    module: &M,
    mut grads: GradientsParams,
    stop: bool,
    extra: &[f32],
    device: &B::Device,
) -> Result<(GradientsParams, bool, Vec<f32>), String> {
    struct Gather<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        parts: Vec<Tensor<B::InnerBackend, 1>>,
        device: B::Device,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Gather<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            if !value.is_require_grad() {
                return;
            }
            let n = value.shape().num_elements();
            let grad = match self.grads.remove::<B::InnerBackend, D>(param.id) {
                Some(grad) => grad.reshape([n]),
                None => Tensor::zeros([n], &self.device),
            };
            self.parts.push(grad);
        }
    }
    struct Scatter<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        flat: Tensor<B::InnerBackend, 1>,
        offset: usize,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Scatter<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            if !value.is_require_grad() {
                return;
            }
            let dims = value.dims();
            let n = value.shape().num_elements();
            let grad = self.flat.clone().narrow(0, self.offset, n).reshape(dims);
            self.offset += n;
            self.grads.register::<B::InnerBackend, D>(param.id, grad);
        }
    }

    let mut gather = Gather::<B> { grads: &mut grads, parts: Vec::new(), device: device.clone() };
    module.visit(&mut gather);
    let mut parts = gather.parts;
    parts.push(Tensor::from_floats([if stop { 1.0 } else { 0.0 }], device));
    let mut flat = host(Tensor::cat(parts, 0))?;
    let len = flat.len();
    flat.extend_from_slice(extra);
    ring.all_reduce_sum(&mut flat)?;
    let extra = flat.split_off(len);
    let any_stop = flat[len - 1] > 0.0;
    // The mean, as `Ring::all_reduce_mean` computes it.
    let n = ring.nodes as f32;
    flat.iter_mut().for_each(|v| *v /= n);
    let flat = Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(flat, [len]), device);
    let mut grads = GradientsParams::new();
    module.visit(&mut Scatter::<B> { grads: &mut grads, flat, offset: 0 });
    Ok((grads, any_stop, extra))
}

/// Averages the running statistics (every float tensor of `module` that takes no gradient,
/// i.e. BatchNorm's `running_mean` and `running_var`) over the ranks, in one all-reduce.
/// A running statistic is shared by every clone of a module (burn's `RunningState` holds it
/// behind an `Arc`), so the Learner's model is updated through `module`, a clone of it.
pub fn all_reduce_running_stats<B: AutodiffBackend, M: AutodiffModule<B>>(
    ring: &mut Ring,
    module: M,
    device: &B::Device,
) -> Result<(), String> {
    struct Gather<B: AutodiffBackend> {
        parts: Vec<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Gather<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            if !value.is_require_grad() {
                let n = value.shape().num_elements();
                self.parts.push(value.inner().reshape([n]));
            }
        }
    }
    struct Replace<B: AutodiffBackend> {
        flat: Tensor<B::InnerBackend, 1>,
        offset: usize,
    }
    impl<B: AutodiffBackend> ModuleMapper<B> for Replace<B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, value, mapper) = param.consume();
            if value.is_require_grad() {
                return Param::from_mapped_value(id, value, mapper);
            }
            let dims = value.dims();
            let n = value.shape().num_elements();
            let mean = self.flat.clone().narrow(0, self.offset, n).reshape(dims);
            self.offset += n;
            Param::from_mapped_value(id, Tensor::from_inner(mean), mapper)
        }
    }

    // A running statistic keeps each thread's latest update aside until it is read into a
    // record; reading one folds them in.
    drop(module.clone().into_record());
    let mut gather = Gather::<B> { parts: Vec::new() };
    module.visit(&mut gather);
    if gather.parts.is_empty() {
        return Ok(());
    }
    let mut flat = host(Tensor::cat(gather.parts, 0))?;
    ring.all_reduce_mean(&mut flat)?;
    let len = flat.len();
    let flat = Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(flat, [len]), device);
    drop(module.map(&mut Replace::<B> { flat, offset: 0 }));
    Ok(())
}

impl<B: AutodiffBackend> CollectiveStrategy<B> {
    /// One epoch of this rank's shard, in step with the other ranks; `true` if the run stopped.
    fn train_epoch<LC: LearningComponentsTypes<Backend = B>>(
        &self,
        ring: &mut Ring,
        learner: &mut Learner<LC>,
        train: &TrainLoader<LC>,
        global: &Progress,
        processor: &mut SupervisedTrainingEventProcessor<LC>,
        interrupter: &Interrupter,
    ) -> bool {
        let mut iterator = train.iter();
        let mut iteration = 0;
        while let Some(batch) = iterator.next() {
            iteration += 1;
            learner.lr_step();
            let progress = iterator.progress();
            let output = learner.train_step(batch);
            let grads = self.exchange_gradients(ring, &learner.model(), output.grads, interrupter);
            let stopped = grads.is_none();
            if let Some(grads) = grads {
                learner.optimizer_step(grads);
            }
            let item = TrainingItem::new(
                output.item,
                progress,
                global.clone(),
                Some(iteration),
                Some(learner.lr_current()),
            );
            processor.process_train(LearnerEvent::ProcessedItem(item));
            if stopped {
                return true;
            }
        }
        false
    }

    /// The step's gradients averaged over the ranks, labels settled; `None` if the run stops.
    fn exchange_gradients<M: AutodiffModule<B>>(
        &self,
        ring: &mut Ring,
        model: &M,
        grads: GradientsParams,
        interrupter: &Interrupter,
    ) -> Option<GradientsParams> {
        let wants_stop = interrupter.should_stop();
        match all_reduce_gradients(
            ring,
            model,
            grads,
            wants_stop,
            &self.label_slots(),
            &self.device,
        ) {
            Ok((grads, false, means)) => {
                self.settle_labels(&means);
                Some(grads)
            }
            Ok((_, true, _)) => {
                if !wants_stop {
                    let reason = "another rank of the run stopped (its output says why)";
                    self.abort(interrupter, reason.into());
                }
                None
            }
            Err(e) => {
                self.abort(interrupter, e);
                None
            }
        }
    }

    /// Keeps `reason` for the caller (see [`Self::failure_slot`]) and stops this rank's training.
    fn abort(&self, interrupter: &Interrupter, reason: String) {
        self.fail(reason.clone());
        interrupter.stop(Some(&reason));
    }
}

/// Validates the epoch's model on this rank's validation loader; the ranks exchange nothing.
fn valid_epoch<LC: LearningComponentsTypes>(
    learner: &Learner<LC>,
    valid: &ValidLoader<LC>,
    global: &Progress,
    processor: &mut SupervisedTrainingEventProcessor<LC>,
) {
    let model = learner.model().valid();
    let mut iterator = valid.iter();
    let mut iteration = 0;
    while let Some(batch) = iterator.next() {
        iteration += 1;
        let progress = iterator.progress();
        let item = model.step(batch);
        let item = TrainingItem::new(item, progress, global.clone(), Some(iteration), None);
        processor.process_valid(LearnerEvent::ProcessedItem(item));
    }
}

impl<LC> SupervisedLearningStrategy<LC> for CollectiveStrategy<TrainingBackend<LC>>
where
    LC: LearningComponentsTypes,
{
    fn fit(
        &self,
        components: TrainingComponents<LC>,
        mut learner: Learner<LC>,
        dataloader_train: TrainLoader<LC>,
        dataloader_valid: ValidLoader<LC>,
        starting_epoch: usize,
    ) -> (TrainingModel<LC>, SupervisedTrainingEventProcessor<LC>) {
        let mut processor = components.event_processor;
        let mut checkpointer = components.checkpointer;
        let interrupter = components.interrupter;
        learner.fork(&self.device);
        // Resumed from the last epoch's checkpoint: nothing to train, and a rank that had
        // finished may not come to the ring at all.
        if starting_epoch > components.num_epochs {
            return (learner.model(), processor);
        }
        let mut ring = match Ring::join(&self.launch, self.nodes, self.fingerprint, starting_epoch)
        {
            Ok(ring) => ring,
            Err(e) => {
                self.abort(&interrupter, e);
                return (learner.model(), processor);
            }
        };
        let train = dataloader_train.to_device(&self.device);
        let valid = dataloader_valid.to_device(&self.device);

        for epoch in starting_epoch..=components.num_epochs {
            let global = Progress::new(epoch, components.num_epochs);
            let stopped = self.train_epoch(
                &mut ring,
                &mut learner,
                &train,
                &global,
                &mut processor,
                &interrupter,
            );
            processor.process_train(LearnerEvent::EndEpoch(epoch));
            if stopped || interrupter.should_stop() {
                break;
            }

            if let Err(e) = all_reduce_running_stats(&mut ring, learner.model(), &self.device) {
                self.abort(&interrupter, e);
                break;
            }

            valid_epoch(&learner, &valid, &global, &mut processor);
            processor.process_valid(LearnerEvent::EndEpoch(epoch));

            if let Some(checkpointer) = &mut checkpointer {
                checkpointer.checkpoint(&learner, epoch, &components.event_store);
            }
        }
        (learner.model(), processor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_keys_are_checked_and_name_the_key() {
        let launch = NodeLaunch::new(2, 1, "127.0.0.1:29500").unwrap();
        assert_eq!((launch.rank, launch.master_port()), (1, 29500));
        let key = |r: Result<NodeLaunch, ConfigError>| r.unwrap_err().key;
        assert_eq!(key(NodeLaunch::new(2, 2, "127.0.0.1:29500")), "rank");
        assert_eq!(key(NodeLaunch::new(1, 0, "127.0.0.1:29500")), "nodes");
        assert_eq!(key(NodeLaunch::new(2, 0, "127.0.0.1")), "master");
        assert_eq!(key(NodeLaunch::new(2, 0, "127.0.0.1:0")), "master");
        assert_eq!(key(NodeLaunch::new(2, 0, "127.0.0.1:65536")), "master");
        assert_eq!(key(NodeLaunch::new(2, 0, ":29500")), "master");
    }

    /// The tests that open ports take turns: a port found free by one could otherwise be
    /// taken by another before it binds it, and one test's rank would meet another's master.
    static NETWORK: Mutex<()> = Mutex::new(());

    fn network() -> std::sync::MutexGuard<'static, ()> {
        NETWORK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// Runs `body(rank, ring)` on `nodes` threads joined in one ring over loopback, each
    /// with the configuration fingerprint and first epoch `fingerprint(rank)`; returns what
    /// each returned, by rank.
    fn on_ring<T: Send>(
        nodes: usize,
        fingerprint: impl Fn(usize) -> (u64, usize) + Sync,
        body: impl Fn(usize, Result<Ring, String>) -> T + Sync,
    ) -> Vec<T> {
        on_ranks(nodes, |rank, launch| {
            let (fingerprint, epoch) = fingerprint(rank);
            body(rank, Ring::join(launch, nodes, fingerprint, epoch))
        })
    }

    /// Runs `body(rank, launch)` on `nodes` threads, each launched as its rank of one run
    /// with its master on a free loopback port; returns what each returned, by rank.
    fn on_ranks<T: Send>(nodes: usize, body: impl Fn(usize, &NodeLaunch) -> T + Sync) -> Vec<T> {
        let master = format!("127.0.0.1:{}", free_port());
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..nodes)
                .map(|rank| {
                    let (master, body) = (&master, &body);
                    scope.spawn(move || body(rank, &NodeLaunch::new(nodes, rank, master).unwrap()))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn ring_all_reduce_is_the_mean_on_every_rank_round_after_round() {
        let _network = network();
        // Rank r holds x_i = 10 r + i + round; sums of small integers are exact in f32, so the
        // mean is fl((sum over r of x_i) / N) whatever the order of the additions. 7 elements
        // over 3 ranks: chunks of 2, 2 and 3; 2 elements: one chunk is empty.
        for (nodes, len) in [(3, 7), (3, 2), (2, 5), (4, 9)] {
            let results = on_ring(
                nodes,
                |_| (42, 1),
                |rank, ring| {
                    let mut ring = ring.unwrap();
                    (0..3)
                        .map(|round| {
                            let mut data: Vec<f32> =
                                (0..len).map(|i| (10 * rank + i + round) as f32).collect();
                            ring.all_reduce_mean(&mut data).unwrap();
                            data
                        })
                        .collect::<Vec<_>>()
                },
            );
            for round in 0..3 {
                let expected: Vec<f32> = (0..len)
                    .map(|i| {
                        let sum: usize = (0..nodes).map(|r| 10 * r + i + round).sum();
                        sum as f32 / nodes as f32
                    })
                    .collect();
                for (rank, rounds) in results.iter().enumerate() {
                    assert_eq!(
                        rounds[round], expected,
                        "nodes {nodes}, rank {rank}, round {round}"
                    );
                }
            }
        }
    }

    #[test]
    fn ranks_with_different_configurations_or_epochs_are_refused_by_name() {
        let _network = network();
        let results =
            on_ring(3, |rank| if rank == 2 { (7, 1) } else { (42, 1) }, |_, ring| ring.err());
        for (rank, err) in results.iter().enumerate() {
            let err = err.as_deref().unwrap_or_else(|| panic!("rank {rank} joined"));
            assert!(err.contains("rank 2's configuration differs"), "rank {rank}: {err}");
        }
        let results =
            on_ring(2, |rank| if rank == 1 { (42, 3) } else { (42, 4) }, |_, ring| ring.err());
        for (rank, err) in results.iter().enumerate() {
            let err = err.as_deref().unwrap_or_else(|| panic!("rank {rank} joined"));
            assert!(
                err.contains("rank 1 starts at epoch 3, rank 0 at epoch 4"),
                "rank {rank}: {err}"
            );
        }
    }

    /// Runs [`agree_on_checkpoint`] on `nodes` threads, rank r with `fingerprint(r)` and the
    /// complete checkpoints `held(r)`; returns each rank's answer.
    fn agree(
        nodes: usize,
        fingerprint: impl Fn(usize) -> u64 + Sync,
        held: impl Fn(usize) -> Vec<usize> + Sync,
    ) -> Vec<Result<Option<usize>, String>> {
        on_ranks(nodes, |rank, launch| {
            agree_on_checkpoint(launch, nodes, fingerprint(rank), &held(rank))
        })
    }

    #[test]
    fn resuming_ranks_meet_at_the_newest_checkpoint_they_all_hold() {
        let _network = network();
        // Rank 1 was killed writing epoch 3's checkpoint: it holds 1 and 2 (burn-train keeps
        // two), the others 2 and 3; every rank holds 2.
        let held = |rank: usize| if rank == 1 { vec![1, 2] } else { vec![2, 3] };
        let answers = agree(3, |_| 42, held);
        assert_eq!(answers, vec![Ok(Some(2)); 3]);
        // No epoch in common (a rank killed before its first checkpoint): all start again.
        let answers = agree(2, |_| 42, |rank| if rank == 0 { vec![1] } else { vec![] });
        assert_eq!(answers, vec![Ok(None); 2]);
        // Another configuration is refused by name, on every rank.
        let answers = agree(2, |rank| if rank == 1 { 7 } else { 42 }, |_| vec![1]);
        for (rank, answer) in answers.iter().enumerate() {
            let err = answer.as_ref().expect_err("refused");
            assert!(err.contains("rank 1's configuration differs"), "rank {rank}: {err}");
        }
    }

    #[test]
    fn a_master_port_in_use_is_an_error_naming_it() {
        let _network = network();
        let busy = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let launch = NodeLaunch::new(2, 0, &format!("127.0.0.1:{port}")).unwrap();
        let err = Ring::join(&launch, 2, 0, 1).unwrap_err();
        assert!(err.contains(&format!("port {port}")) && err.contains("master"), "{err}");
    }
}
