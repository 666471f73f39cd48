//! iceoryx2 0.7: publish-subscribe over shared memory, zero-copy. One service each way.
//! Receivers busy-poll (`receive` in a loop, spinning 128 times, then yielding each time):
//! iceoryx2's publish-subscribe has no blocking receive; its event services (which
//! let a receiver sleep) are a second mode, `iceoryx2-event`: the sender notifies after
//! each send, the receiver sleeps on a listener when it finds nothing. The polling mode's
//! figures are those of two processes spinning, each on its own core only when the
//! machine has two free.
//!
//! - rtt64: `[u8; 64]` samples, parent to child and back (loan, write, send).
//! - frame3m: a `[u8]` slice service of 3 MiB samples parent to child (`loan_slice_uninit`,
//!   write the producer's bytes in place, send), `u64` acknowledgements back.

use crate::stream::{check_reply, fill_reply};
use crate::watchdog::{spawn, Watchdog};
use crate::work::{check_frame, fill_msg, msg_seq, time_frames, time_rtts};
use crate::{Contender, Job, Measured, Res, Scenario, FRAME_LEN, INFLIGHT, MSG_LEN, PAGE};
use iceoryx2::port::{listener::Listener, notifier::Notifier};
use iceoryx2::prelude::*;
use std::process::Stdio;
use std::time::Duration;

/// The child's first message on the way back: its ports exist, the run can start.
const READY: u64 = u64::MAX;

fn node() -> Res<Node<ipc::Service>> {
    // iceoryx2 warns when it finds no config file; the defaults are what we want.
    set_log_level(LogLevel::Error);
    // A run the watchdog ended leaves its nodes' shared memory behind (the child was
    // killed, the parent exited without its destructors); iceoryx2 removes what dead
    // nodes left, so /dev/shm does not fill up over many runs.
    Node::<ipc::Service>::cleanup_dead_nodes(Config::global_config());
    NodeBuilder::new()
        .create::<ipc::Service>()
        .map_err(|e| format!("iceoryx2 node: {e:?}"))
}

/// Service names carry the parent's pid, so concurrent or crashed runs never meet.
fn service_name(tag: &str, scenario: Scenario, dir: &str) -> Res<ServiceName> {
    let s = format!("pagebuf-bench-ipc/{tag}/{}/{dir}", scenario.name());
    ServiceName::new(&s).map_err(|e| format!("service name {s:?}: {e:?}"))
}

fn e<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> String {
    move |err| format!("iceoryx2 {what}: {err:?}")
}

/// Busy-polls `f` until it yields a value; gives up when `alive` says the peer is gone.
/// The first `SPINS` polls only spin; after that every poll yields the core, because on a
/// busy 2-core machine the two processes often share one core, and a spinning receiver
/// would otherwise keep its peer from running for a whole time slice.
fn poll<T>(mut f: impl FnMut() -> Res<Option<T>>, alive: &dyn Fn() -> bool) -> Res<T> {
    const SPINS: u32 = 128;
    let mut polls = 0u32;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        polls = polls.wrapping_add(1);
        if polls < SPINS {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
            if polls % (1 << 14) == 0 && !alive() {
                return Err("the peer exited".into());
            }
        }
    }
}

/// How a receiver learns that a sample arrived: by busy-polling (`iceoryx2`), or
/// (`iceoryx2-event`) by sleeping on an iceoryx2 event service the sender notifies after
/// every send, as a blocking socket reader sleeps in the kernel.
struct Wake {
    events: Option<(Notifier<ipc::Service>, Listener<ipc::Service>)>,
}

impl Wake {
    /// The parent creates both event services, the child opens them; each side notifies
    /// on its own direction and listens on the other.
    fn new(
        node: &Node<ipc::Service>,
        tag: &str,
        scenario: Scenario,
        events: bool,
        parent: bool,
    ) -> Res<Self> {
        if !events {
            return Ok(Wake { events: None });
        }
        let mut factories = Vec::new();
        for dir in ["p2c-event", "c2p-event"] {
            let b = node
                .service_builder(&service_name(tag, scenario, dir)?)
                .event();
            factories.push(if parent {
                b.create().map_err(e("creating an event service"))?
            } else {
                b.open().map_err(e("opening an event service"))?
            });
        }
        let (mine, theirs) = if parent { (0, 1) } else { (1, 0) };
        let notifier = factories[mine]
            .notifier_builder()
            .create()
            .map_err(e("notifier"))?;
        let listener = factories[theirs]
            .listener_builder()
            .create()
            .map_err(e("listener"))?;
        Ok(Wake {
            events: Some((notifier, listener)),
        })
    }

    fn notify(&self) -> Res<()> {
        if let Some((notifier, _)) = &self.events {
            notifier.notify().map_err(e("notify"))?;
        }
        Ok(())
    }

    /// Until `f` yields a value. A notification stays pending until waited for, so one
    /// sent between our empty `receive` and our wait is not lost; a leftover one only
    /// costs a second look.
    fn wait<T>(&self, mut f: impl FnMut() -> Res<Option<T>>, alive: &dyn Fn() -> bool) -> Res<T> {
        let Some((_, listener)) = &self.events else {
            return poll(f, alive);
        };
        loop {
            if let Some(v) = f()? {
                return Ok(v);
            }
            // Bounded so a dead peer is noticed.
            if listener
                .timed_wait_one(Duration::from_millis(100))
                .map_err(e("wait"))?
                .is_none()
                && !alive()
            {
                return Err("the peer exited".into());
            }
        }
    }
}

pub fn parent(job: Job, events: bool, bound: Duration, what: String) -> Res<Measured> {
    let tag = std::process::id().to_string();
    let node = node()?;
    let wake = Wake::new(&node, &tag, job.scenario, events, true)?;
    let me = if events {
        Contender::Iceoryx2Event
    } else {
        Contender::Iceoryx2
    };
    let sb = |dir| -> Res<_> { Ok(node.service_builder(&service_name(&tag, job.scenario, dir)?)) };
    match job.scenario {
        Scenario::Rtt64 => {
            let p2c = sb("p2c")?
                .publish_subscribe::<[u8; MSG_LEN]>()
                .max_publishers(1)
                .max_subscribers(1)
                .create()
                .map_err(e("creating the service"))?;
            let c2p = sb("c2p")?
                .publish_subscribe::<[u8; MSG_LEN]>()
                .max_publishers(1)
                .max_subscribers(1)
                .create()
                .map_err(e("creating the service"))?;
            let publisher = p2c.publisher_builder().create().map_err(e("publisher"))?;
            let subscriber = c2p.subscriber_builder().create().map_err(e("subscriber"))?;
            let child = spawn(me, job, &tag, Stdio::null(), Stdio::null())?;
            let dog = Watchdog::start(child, bound, what);
            let alive = || !dog.child_exited();
            let recv = || subscriber.receive().map_err(e("receive"));
            let res = (|| {
                let ready = wake.wait(recv, &alive)?;
                if msg_seq(ready.payload()) != READY {
                    return Err("the child's first message was not READY".into());
                }
                drop(ready);
                let mut msg = [0u8; MSG_LEN];
                time_rtts(job, |seq| {
                    fill_msg(&mut msg, seq);
                    let s = publisher.loan_uninit().map_err(e("loan"))?;
                    s.write_payload(msg).send().map_err(e("send"))?;
                    wake.notify()?;
                    let back = wake.wait(recv, &alive)?;
                    check_reply(back.payload(), seq)
                })
            })();
            finish(dog, res)
        }
        Scenario::Frame3m => {
            let p2c = sb("p2c")?
                .publish_subscribe::<[u8]>()
                .max_publishers(1)
                .max_subscribers(1)
                .history_size(0)
                .subscriber_max_buffer_size(INFLIGHT as usize)
                .subscriber_max_borrowed_samples(1)
                .create()
                .map_err(e("creating the frame service"))?;
            let c2p = sb("c2p")?
                .publish_subscribe::<u64>()
                .max_publishers(1)
                .max_subscribers(1)
                // Every unconsumed acknowledgement must fit: at most INFLIGHT.
                .subscriber_max_buffer_size(INFLIGHT as usize + 1)
                .create()
                .map_err(e("creating the acknowledgement service"))?;
            let publisher = p2c
                .publisher_builder()
                .initial_max_slice_len(FRAME_LEN)
                .max_loaned_samples(1)
                .create()
                .map_err(e("frame publisher"))?;
            let subscriber = c2p.subscriber_builder().create().map_err(e("subscriber"))?;
            let child = spawn(me, job, &tag, Stdio::null(), Stdio::null())?;
            let dog = Watchdog::start(child, bound, what);
            let alive = || !dog.child_exited();
            let recv = || -> Res<Option<u64>> {
                Ok(subscriber
                    .receive()
                    .map_err(e("receive"))?
                    .map(|s| *s.payload()))
            };
            let res = (|| {
                if wake.wait(recv, &alive)? != READY {
                    return Err("the child's first message was not READY".into());
                }
                time_frames(
                    job,
                    |seq| {
                        let mut s = publisher
                            .loan_slice_uninit(FRAME_LEN)
                            .map_err(e("loan of a frame"))?;
                        let frame = s.payload_mut();
                        for (i, b) in seq.to_le_bytes().into_iter().enumerate() {
                            frame[i].write(b);
                        }
                        for off in (PAGE..FRAME_LEN).step_by(PAGE) {
                            frame[off].write(seq as u8);
                        }
                        // SAFETY: the sample lies in a shared-memory mapping iceoryx2
                        // created (the kernel zero-fills it; later it holds earlier
                        // frames), so every byte has a defined value, and the bytes the
                        // consumer checks were written just above. Initializing all
                        // 3 MiB would add work the other contenders' producers do not do.
                        let s = unsafe { s.assume_init() };
                        s.send().map_err(e("send of a frame"))?;
                        wake.notify()?;
                        Ok(())
                    },
                    || wake.wait(recv, &alive),
                )
            })();
            finish(dog, res)
        }
    }
}

fn finish(dog: Watchdog, res: Res<Measured>) -> Res<Measured> {
    match res {
        Ok(m) => dog.finish().map(|()| m),
        Err(err) => {
            dog.abort();
            Err(err)
        }
    }
}

pub fn child(job: Job, events: bool, tag: &str) -> Res<()> {
    let node = node()?;
    let wake = Wake::new(&node, tag, job.scenario, events, false)?;
    let sb = |dir| -> Res<_> { Ok(node.service_builder(&service_name(tag, job.scenario, dir)?)) };
    // The parent kills us if it gives up; if it dies instead, we are re-parented, and
    // stop polling rather than spin for ever.
    let ppid = std::os::unix::process::parent_id();
    let alive = move || std::os::unix::process::parent_id() == ppid;
    match job.scenario {
        Scenario::Rtt64 => {
            let p2c = sb("p2c")?
                .publish_subscribe::<[u8; MSG_LEN]>()
                .open()
                .map_err(e("child: opening the service"))?;
            let c2p = sb("c2p")?
                .publish_subscribe::<[u8; MSG_LEN]>()
                .open()
                .map_err(e("child: opening the service"))?;
            let subscriber = p2c
                .subscriber_builder()
                .create()
                .map_err(e("child: subscriber"))?;
            let publisher = c2p
                .publisher_builder()
                .create()
                .map_err(e("child: publisher"))?;
            let mut reply = [0u8; MSG_LEN];
            reply[..8].copy_from_slice(&READY.to_le_bytes());
            publisher.send_copy(reply).map_err(e("child: send"))?;
            wake.notify()?;
            for seq in 0..job.total() {
                let msg =
                    wake.wait(|| subscriber.receive().map_err(e("child: receive")), &alive)?;
                let got = msg_seq(msg.payload());
                if got != seq || msg.payload()[8] != seq as u8 {
                    return Err(format!("child: message {seq} carried {got}"));
                }
                drop(msg);
                fill_reply(&mut reply, seq);
                let s = publisher.loan_uninit().map_err(e("child: loan"))?;
                s.write_payload(reply).send().map_err(e("child: send"))?;
                wake.notify()?;
            }
        }
        Scenario::Frame3m => {
            let p2c = sb("p2c")?
                .publish_subscribe::<[u8]>()
                .open()
                .map_err(e("child: opening the frame service"))?;
            let c2p = sb("c2p")?
                .publish_subscribe::<u64>()
                .open()
                .map_err(e("child: opening the acknowledgement service"))?;
            let subscriber = p2c
                .subscriber_builder()
                .create()
                .map_err(e("child: subscriber"))?;
            let publisher = c2p
                .publisher_builder()
                .create()
                .map_err(e("child: publisher"))?;
            publisher.send_copy(READY).map_err(e("child: send"))?;
            wake.notify()?;
            for seq in 0..job.total() {
                let frame =
                    wake.wait(|| subscriber.receive().map_err(e("child: receive")), &alive)?;
                check_frame(frame.payload(), seq).map_err(|err| format!("child: {err}"))?;
                // Released before the acknowledgement, so the producer's next loan finds it.
                drop(frame);
                publisher
                    .send_copy(seq)
                    .map_err(e("child: acknowledging"))?;
                wake.notify()?;
            }
        }
    }
    Ok(())
}
