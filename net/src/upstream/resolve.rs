//! Name resolution off the shard: a few resolver threads per process run the system resolver
//! (`getaddrinfo`, which blocks), behind a bounded queue and a bounded cache; each pool keeps
//! the last answer for its own host ([`Addresses`]), so a shard asks the threads at most once
//! per host per TTL, and never waits on them longer than the connect timeout its caller sets.
//!
//! ```text
//! Pool::connect ─► Addresses (per pool: IP literal | answer until expiry | lookup pending)
//!                     └─ miss ─► try_send ─► [bounded queue] ─► resolver thread ─► DnsCache
//!                                                                      └─ getaddrinfo
//! ```
//!
//! Lifetimes: an answer with addresses is reused for [`POSITIVE_TTL`] (the system resolver
//! does not report the record's TTL, so this fixed value is both floor and ceiling); a failure
//! (no such name, no address, resolver error) for [`NEGATIVE_TTL`], so an unresolvable provider
//! fails at once instead of sending a lookup per request. The process cache holds at most
//! [`CACHE_ENTRIES_MAX`] names. A full queue fails the lookup at once; nothing waits for room.

use std::{
    cell::RefCell,
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr, ToSocketAddrs},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use futures_util::future::{FutureExt, Shared};

use super::{conn::ADDRS_TRIED_MAX, error::UpstreamError};

/// How long addresses that resolved are reused.
pub(crate) const POSITIVE_TTL: Duration = Duration::from_secs(30);
/// How long a failed lookup is remembered before the name is asked for again.
pub(crate) const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Most names the process-wide cache holds; past it, expired entries go first, then the
/// entry closest to expiry.
pub(crate) const CACHE_ENTRIES_MAX: usize = 1024;
/// Most lookups queued for the resolver threads. Each pool has at most one lookup pending,
/// so this is only reached with more than this many distinct pools missing at once.
const QUEUE_MAX: usize = 256;
/// Resolver threads. More than one, so a name whose lookup hangs (an unreachable DNS server
/// retries for seconds) does not hold up every other name.
const THREADS: usize = 4;

const _: () = assert!(NEGATIVE_TTL.as_secs() <= POSITIVE_TTL.as_secs());
const _: () = assert!(THREADS >= 2 && QUEUE_MAX >= THREADS);

/// One lookup's answer and how long it may be reused.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// The addresses (at most [`ADDRS_TRIED_MAX`], never empty), or why there are none.
    pub(crate) addrs: Result<Arc<[SocketAddr]>, Arc<str>>,
    /// When the answer stops being reusable.
    pub(crate) expires: Instant,
}

impl Resolved {
    /// The answer of a system lookup at `now`, with its lifetime.
    fn new(result: io::Result<Vec<SocketAddr>>, now: Instant, positive: Duration, negative: Duration) -> Resolved {
        let addrs: Result<Arc<[SocketAddr]>, Arc<str>> = match result {
            Ok(addrs) if !addrs.is_empty() => Ok(addrs.into()),
            Ok(_) => Err("no address".into()),
            Err(e) => Err(e.to_string().into()),
        };
        let ttl = if addrs.is_ok() { positive } else { negative };
        // An `Instant` this far ahead cannot overflow on any real clock; a failure to add
        // only makes the answer single-use.
        Resolved { addrs, expires: now.checked_add(ttl).unwrap_or(now) }
    }

    fn to_result(&self, host: &str) -> Result<Arc<[SocketAddr]>, UpstreamError> {
        self.addrs.clone().map_err(|why| UpstreamError::Resolve(format!("{host}: {why}")))
    }
}

/// The process-wide cache of answers, by (host, port). Pure data: the caller passes the time.
pub(crate) struct DnsCache {
    entries: HashMap<(String, u16), Resolved>,
    entries_max: usize,
    positive: Duration,
    negative: Duration,
}

impl DnsCache {
    /// An empty cache of at most `entries_max` names (at least 1), reusing answers for
    /// `positive` and failures for `negative`.
    pub(crate) fn new(entries_max: usize, positive: Duration, negative: Duration) -> DnsCache {
        DnsCache { entries: HashMap::new(), entries_max: entries_max.max(1), positive, negative }
    }

    /// The cached answer for `(host, port)` if it has not expired at `now`.
    pub(crate) fn get(&self, host: &str, port: u16, now: Instant) -> Option<Resolved> {
        // A borrowed-key lookup on a (String, u16) tuple would need a custom key type; the
        // allocation happens on a resolver thread, never on a shard.
        let entry = self.entries.get(&(host.to_owned(), port))?;
        (entry.expires > now).then(|| entry.clone())
    }

    /// Stores the outcome of a lookup made at `now` and returns it as cached.
    pub(crate) fn insert(
        &mut self,
        host: &str,
        port: u16,
        result: io::Result<Vec<SocketAddr>>,
        now: Instant,
    ) -> Resolved {
        let resolved = Resolved::new(result, now, self.positive, self.negative);
        let key = (host.to_owned(), port);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.entries_max {
            self.entries.retain(|_, e| e.expires > now);
            if self.entries.len() >= self.entries_max {
                let soonest = self.entries.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(key, resolved.clone());
        debug_assert!(self.entries.len() <= self.entries_max);
        resolved
    }

    /// Names held, expired ones included until they are pushed out.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// One lookup asked of the resolver threads.
struct Job {
    host: String,
    port: u16,
    reply: flume::Sender<Resolved>,
}

/// The resolver threads' queue; started on the first lookup of the process.
struct Resolver {
    jobs: flume::Sender<Job>,
}

fn resolver() -> &'static Resolver {
    static RESOLVER: OnceLock<Resolver> = OnceLock::new();
    RESOLVER.get_or_init(|| {
        let (jobs, queue) = flume::bounded::<Job>(QUEUE_MAX);
        let cache = Arc::new(Mutex::new(DnsCache::new(CACHE_ENTRIES_MAX, POSITIVE_TTL, NEGATIVE_TTL)));
        for i in 0..THREADS {
            let (queue, cache) = (queue.clone(), Arc::clone(&cache));
            let spawned =
                std::thread::Builder::new().name(format!("gk-resolver-{i}")).spawn(move || serve_jobs(&queue, &cache));
            if let Err(e) = spawned {
                // With no thread at all the queue has no receiver and every lookup fails.
                tracing::warn!(error = %e, "could not start a resolver thread");
            }
        }
        Resolver { jobs }
    })
}

/// A resolver thread: answers jobs from the cache, else from the system resolver, until the
/// process ends.
fn serve_jobs(queue: &flume::Receiver<Job>, cache: &Mutex<DnsCache>) {
    while let Ok(job) = queue.recv() {
        let cached = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&job.host, job.port, Instant::now());
        let resolved = match cached {
            Some(hit) => hit,
            None => {
                let result = system_lookup(&job.host, job.port);
                let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.insert(&job.host, job.port, result, Instant::now())
            }
        };
        // The asking shard may have given up (its connect timed out); its pool picks the
        // answer up from the cache next time.
        let _ = job.reply.try_send(resolved);
    }
}

/// The blocking system lookup (`/etc/hosts`, then DNS, as nsswitch says).
fn system_lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    #[cfg(debug_assertions)]
    test_hook::delay(host);
    Ok((host, port).to_socket_addrs()?.take(ADDRS_TRIED_MAX).collect())
}

/// Debug builds only: a lookup of `slow-<MS>.dns-test.invalid` waits MS milliseconds (at most
/// 60 s) before failing as every `.invalid` name does (RFC 6761), so gateway tests can hold a
/// lookup pending. Compiled out of release builds, and `.invalid` never names a real host.
#[cfg(debug_assertions)]
mod test_hook {
    pub(super) fn delay(host: &str) {
        let ms = host
            .strip_suffix(".dns-test.invalid")
            .and_then(|h| h.strip_prefix("slow-"))
            .and_then(|ms| ms.parse::<u64>().ok());
        if let Some(ms) = ms {
            std::thread::sleep(std::time::Duration::from_millis(ms.min(60_000)));
        }
    }
}

/// A pool's addresses for its origin: fixed for an IP literal, else the last answer until it
/// expires, else the lookup under way. Owned by one pool on one shard.
pub(crate) struct Addresses {
    host: String,
    port: u16,
    memo: RefCell<Memo>,
}

/// A lookup under way, awaited by every request of the pool that needs it.
type Pending = Shared<flume::r#async::RecvFut<'static, Resolved>>;

enum Memo {
    /// The origin names an IP address: nothing to resolve, ever.
    Literal(Arc<[SocketAddr]>),
    /// Nothing asked yet, or the last ask could not be queued.
    Empty,
    /// The last answer, reusable until its expiry.
    Known(Resolved),
    /// Asked; not answered yet.
    Pending(Pending),
}

impl Addresses {
    /// The addresses of `host:port`; an IP literal is taken as is.
    pub(crate) fn new(host: &str, port: u16) -> Addresses {
        let memo = match host.parse::<IpAddr>() {
            Ok(ip) => Memo::Literal(Arc::from([SocketAddr::new(ip, port)])),
            Err(_) => Memo::Empty,
        };
        Addresses { host: host.to_owned(), port, memo: RefCell::new(memo) }
    }

    /// The origin's addresses: at once from the memo, else after the resolver threads answer.
    /// Unbounded in time by itself (a hung system resolver never answers): the caller bounds
    /// it, and a later call picks up the same lookup.
    pub(crate) async fn get(&self) -> Result<Arc<[SocketAddr]>, UpstreamError> {
        let pending = {
            let mut memo = self.memo.borrow_mut();
            match &*memo {
                Memo::Literal(addrs) => return Ok(Arc::clone(addrs)),
                Memo::Known(r) if r.expires > Instant::now() => return r.to_result(&self.host),
                Memo::Pending(p) => p.clone(),
                Memo::Known(_) | Memo::Empty => {
                    let p = self.ask()?;
                    *memo = Memo::Pending(p.clone());
                    p
                }
            }
        };
        let answered = pending.clone().await;
        let mut memo = self.memo.borrow_mut();
        let resolved = match answered {
            Ok(resolved) => resolved,
            Err(flume::RecvError::Disconnected) => {
                // The thread dropped the job without an answer: only a panicking resolver
                // thread does that. Ask again next time.
                if matches!(&*memo, Memo::Pending(p) if p.ptr_eq(&pending)) {
                    *memo = Memo::Empty;
                }
                return Err(UpstreamError::Resolve(format!("{}: the resolver stopped", self.host)));
            }
        };
        // Only the waiter of the lookup still in the memo records it; an older lookup's
        // late waiter must not replace a newer one.
        if matches!(&*memo, Memo::Pending(p) if p.ptr_eq(&pending)) {
            *memo = Memo::Known(resolved.clone());
        }
        resolved.to_result(&self.host)
    }

    /// Queues a lookup without waiting for room.
    fn ask(&self) -> Result<Pending, UpstreamError> {
        let (reply, answer) = flume::bounded(1);
        let job = Job { host: self.host.clone(), port: self.port, reply };
        resolver().jobs.try_send(job).map_err(|e| {
            let why = match e {
                flume::TrySendError::Full(_) => "the resolver queue is full",
                flume::TrySendError::Disconnected(_) => "no resolver thread runs",
            };
            UpstreamError::Resolve(format!("{}: {why}", self.host))
        })?;
        Ok(answer.into_recv_async().shared())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 443))
    }

    fn cache(max: usize) -> DnsCache {
        DnsCache::new(max, Duration::from_secs(30), Duration::from_secs(5))
    }

    #[test]
    fn answers_live_for_their_ttl() {
        let mut c = cache(8);
        let t0 = Instant::now();
        let r = c.insert("a.example", 443, Ok(vec![addr(1)]), t0);
        assert_eq!(r.expires, t0 + Duration::from_secs(30));
        assert_eq!(
            c.get("a.example", 443, t0 + Duration::from_secs(29)).map(|r| r.addrs),
            Some(Ok(Arc::from([addr(1)])))
        );
        assert!(c.get("a.example", 443, t0 + Duration::from_secs(30)).is_none(), "expired");
        assert!(c.get("a.example", 80, t0).is_none(), "the port is part of the key");
    }

    #[test]
    fn failures_are_remembered_briefly() {
        let mut c = cache(8);
        let t0 = Instant::now();
        let r = c.insert("gone.invalid", 443, Err(io::Error::other("no such name")), t0);
        assert_eq!(r.expires, t0 + Duration::from_secs(5));
        let hit = c.get("gone.invalid", 443, t0 + Duration::from_secs(4)).expect("negative entry");
        assert_eq!(hit.addrs.err().as_deref(), Some("no such name"));
        assert!(c.get("gone.invalid", 443, t0 + Duration::from_secs(5)).is_none());
        let empty = c.insert("empty.example", 443, Ok(Vec::new()), t0);
        assert!(empty.addrs.is_err(), "no address is a failure");
        assert_eq!(empty.expires, t0 + Duration::from_secs(5));
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut c = cache(3);
        let t0 = Instant::now();
        c.insert("fails", 1, Err(io::Error::other("x")), t0); // expires at +5 s
        c.insert("a", 1, Ok(vec![addr(1)]), t0);
        c.insert("b", 1, Ok(vec![addr(2)]), t0 + Duration::from_secs(1));
        // Full, nothing expired: the entry closest to expiry goes.
        c.insert("c", 1, Ok(vec![addr(3)]), t0 + Duration::from_secs(2));
        assert_eq!(c.len(), 3);
        assert!(c.get("fails", 1, t0 + Duration::from_secs(2)).is_none());
        assert!(c.get("a", 1, t0 + Duration::from_secs(2)).is_some());
        // Full with an expired entry: it goes first, however soon the others expire.
        let later = t0 + Duration::from_millis(30_500);
        c.insert("d", 1, Ok(vec![addr(4)]), later);
        assert_eq!(c.len(), 3);
        assert!(c.get("a", 1, t0).is_none(), "a expired at +30 s and was dropped");
        assert!(["b", "c", "d"].iter().all(|h| c.get(h, 1, later).is_some()));
        // Replacing a name evicts nothing.
        c.insert("d", 1, Ok(vec![addr(5)]), later);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("d", 1, later).map(|r| r.addrs), Some(Ok(Arc::from([addr(5)]))));
        c.insert("e", 1, Ok(vec![addr(6)]), later);
        assert_eq!(c.len(), 3);
        assert!(c.get("b", 1, later).is_none(), "b was the closest to expiry");
    }

    #[test]
    fn literal_addresses_skip_the_resolver() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        for (host, want) in [("127.0.0.1", "127.0.0.1:8080"), ("::1", "[::1]:8080")] {
            let a = Addresses::new(host, 8080);
            let got = rt.block_on(a.get()).unwrap();
            assert_eq!(got[..], [want.parse::<SocketAddr>().unwrap()]);
        }
    }

    #[test]
    fn an_unresolvable_name_fails_and_is_remembered() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        let a = Addresses::new("nonexistent.invalid", 443);
        let e = rt.block_on(a.get()).unwrap_err();
        assert!(matches!(&e, UpstreamError::Resolve(why) if why.starts_with("nonexistent.invalid: ")), "{e:?}");
        assert!(matches!(&*a.memo.borrow(), Memo::Known(r) if r.addrs.is_err()), "negative answer kept");
        let start = Instant::now();
        assert!(rt.block_on(a.get()).is_err());
        assert!(start.elapsed() < Duration::from_millis(50), "answered from the memo");
    }

    #[test]
    fn a_slow_lookup_is_shared_and_bounded_by_the_caller() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        let a = Addresses::new("slow-300.dns-test.invalid", 443);
        rt.block_on(async {
            let start = Instant::now();
            let first = monoio::time::timeout(Duration::from_millis(50), a.get()).await;
            assert!(first.is_err(), "still pending after 50 ms");
            assert!(start.elapsed() < Duration::from_millis(200));
            assert!(matches!(&*a.memo.borrow(), Memo::Pending(_)));
            // A later caller waits on the same lookup rather than queueing another.
            let second = a.get().await;
            assert!(matches!(second, Err(UpstreamError::Resolve(_))), "{second:?}");
            assert!(start.elapsed() >= Duration::from_millis(290), "{:?}", start.elapsed());
            assert!(start.elapsed() < Duration::from_millis(2_000), "{:?}", start.elapsed());
        });
    }
}
