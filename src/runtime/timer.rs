//! A coarse clock for the timeouts armed on every request and almost never fired: hyper's
//! HTTP/1 header-read timeout (per listener and worker) and the upstream response timeout (per
//! worker).
//!
//! hyper arms the header-read timeout every time a connection waits for a request head, which on
//! a keep-alive connection is once per request, and drops it unfired a moment later; the
//! response timeout is armed while each request waits for its upstream. On tokio's timer every
//! arming is a timer-wheel insert and remove under the driver's lock. Often it also writes the
//! driver's eventfd to wake it, a system call on the hot path. Here a timeout is a slot in one list per timer, filled
//! the first time the timeout is polled and emptied when it is dropped. A ticker wakes the
//! expired ones every [`CoarseTimer::tick`]. So a timeout fires between its deadline and one
//! tick later, and costs no system call.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use slab::Slab;

/// Ticks are this fraction of the timeout…
const TICKS_PER_TIMEOUT: u32 = 10;
/// …within these bounds.
const TICK_BOUNDS: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

#[derive(Clone)]
pub struct CoarseTimer {
    slots: Arc<Mutex<Slab<Slot>>>,
}

/// An armed timeout. A slot belongs to its timeout until that timeout removes it (when dropped,
/// reset or seen fired); the ticker only marks slots fired.
struct Slot {
    deadline: Instant,
    /// Taken when the ticker fires it.
    waker: Option<Waker>,
}

/// Wakes every armed timeout whose deadline has passed.
fn fire(slots: &mut Slab<Slot>, now: Instant) {
    for (_, slot) in slots.iter_mut() {
        if slot.deadline <= now
            && let Some(waker) = slot.waker.take()
        {
            waker.wake();
        }
    }
}

impl CoarseTimer {
    /// A timer for timeouts of about `timeout`, with its ticker spawned on the current runtime.
    /// The ticker ends once the timer and every timeout from it are gone.
    pub fn new(timeout: Duration) -> CoarseTimer {
        let timer = CoarseTimer {
            slots: Arc::default(),
        };
        tokio::spawn(ticker(
            Arc::downgrade(&timer.slots),
            CoarseTimer::tick(timeout),
        ));
        timer
    }

    /// A timeout at `deadline`, armed when first polled.
    pub fn deadline(&self, deadline: Instant) -> CoarseSleep {
        CoarseSleep {
            slots: self.slots.clone(),
            deadline,
            state: State::Unarmed,
        }
    }

    /// How often expired timeouts are woken: a tenth of the timeout, within 10 ms to 1 s.
    pub fn tick(timeout: Duration) -> Duration {
        (timeout / TICKS_PER_TIMEOUT).clamp(TICK_BOUNDS.0, TICK_BOUNDS.1)
    }
}

async fn ticker(slots: Weak<Mutex<Slab<Slot>>>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(slots) = slots.upgrade() else { return };
        fire(&mut slots.lock().expect("poisoned"), Instant::now());
    }
}

impl Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(self.deadline(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(sleep) => sleep.get_mut().reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

enum State {
    /// Not polled since made or reset: holds no slot.
    Unarmed,
    /// Waiting in this slot.
    Armed(usize),
    /// Fired (its slot emptied).
    Fired,
}

pub struct CoarseSleep {
    slots: Arc<Mutex<Slab<Slot>>>,
    deadline: Instant,
    state: State,
}

impl CoarseSleep {
    /// Moves the deadline (disarmed until polled again).
    pub fn reset(&mut self, deadline: Instant) {
        self.disarm();
        self.deadline = deadline;
    }

    fn disarm(&mut self) {
        if let State::Armed(i) = self.state {
            self.slots.lock().expect("poisoned").remove(i);
        }
        self.state = State::Unarmed;
    }
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut slots = this.slots.lock().expect("poisoned");
        match this.state {
            State::Fired => return Poll::Ready(()),
            State::Unarmed => {
                let slot = Slot {
                    deadline: this.deadline,
                    waker: Some(cx.waker().clone()),
                };
                this.state = State::Armed(slots.insert(slot));
            }
            State::Armed(i) => match &mut slots[i].waker {
                None => {
                    slots.remove(i);
                    this.state = State::Fired;
                    return Poll::Ready(());
                }
                Some(waker) if !waker.will_wake(cx.waker()) => *waker = cx.waker().clone(),
                Some(_) => {}
            },
        }
        Poll::Pending
    }
}

impl Sleep for CoarseSleep {}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn armed(timer: &CoarseTimer) -> usize {
        timer.slots.lock().unwrap().len()
    }

    /// Polls once, which arms it.
    fn poll_once(sleep: &mut Pin<Box<dyn Sleep>>) -> Poll<()> {
        sleep.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn a_timeout_fires_after_its_deadline() {
        let timer = CoarseTimer::new(Duration::from_millis(100));
        let started = Instant::now();
        tokio::time::timeout(
            Duration::from_secs(10),
            timer.sleep(Duration::from_millis(100)),
        )
        .await
        .expect("the timeout fired");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(armed(&timer), 0, "a fired timeout empties its slot");
    }

    #[tokio::test]
    async fn dropped_timeouts_give_their_slots_back() {
        let timer = CoarseTimer::new(Duration::from_secs(10));
        let mut sleeps: Vec<_> = (0..3)
            .map(|_| timer.sleep(Duration::from_secs(10)))
            .collect();
        assert_eq!(armed(&timer), 0, "not armed before the first poll");
        for s in &mut sleeps {
            assert!(poll_once(s).is_pending());
        }
        assert_eq!(armed(&timer), 3);
        drop(sleeps);
        assert_eq!(armed(&timer), 0);
    }

    #[tokio::test]
    async fn reset_moves_the_deadline() {
        let timer = CoarseTimer::new(Duration::from_millis(100));
        let mut sleep = timer.sleep(Duration::from_secs(3600));
        assert!(poll_once(&mut sleep).is_pending());
        timer.reset(&mut sleep, Instant::now() + Duration::from_millis(50));
        assert_eq!(armed(&timer), 0, "reset disarms until the next poll");
        tokio::time::timeout(Duration::from_secs(10), sleep)
            .await
            .expect("fired at the new deadline");
    }

    #[tokio::test]
    async fn a_fired_timeout_leaves_the_others_armed() {
        let timer = CoarseTimer::new(Duration::from_millis(100));
        let mut long = timer.sleep(Duration::from_secs(3600));
        assert!(poll_once(&mut long).is_pending());
        timer.sleep(Duration::from_millis(30)).await;
        assert_eq!(armed(&timer), 1);
        assert!(poll_once(&mut long).is_pending());
        drop(long);
        assert_eq!(armed(&timer), 0);
    }

    #[test]
    fn ticks_are_a_tenth_of_the_timeout_within_bounds() {
        for (timeout, tick) in [
            (Duration::from_secs(10), Duration::from_secs(1)),
            (Duration::from_secs(60), Duration::from_secs(1)),
            (Duration::from_millis(500), Duration::from_millis(50)),
            (Duration::from_millis(20), Duration::from_millis(10)),
        ] {
            assert_eq!(CoarseTimer::tick(timeout), tick, "timeout {timeout:?}");
        }
    }
}
