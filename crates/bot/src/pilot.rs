//! How a bot moves, without I/O: given where its avatar is and where it faces, the controls to
//! hold now. Wanderers stroll between random spots, club-goers gather on one spot and dance,
//! commuters walk back and forth across their region's east border.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use world::limits::REGION_SIZE;
use world::{Controls, Quat, RegionId, Vec3};

use crate::limits::*;

/// What the bots do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// Walk to a random spot of the region, pause, repeat.
    Wander,
    /// Everyone gathers around one spot (the region centre) and dances there.
    Club,
    /// Walk back and forth between the home region and its east neighbour.
    Commute,
}

impl std::str::FromStr for Behaviour {
    type Err = String;
    fn from_str(s: &str) -> Result<Behaviour, String> {
        match s {
            "wander" => Ok(Behaviour::Wander),
            "club" => Ok(Behaviour::Club),
            "commute" => Ok(Behaviour::Commute),
            other => Err(format!("unknown behaviour {other:?}; use wander, club or commute")),
        }
    }
}

/// Where the avatar is, in world metres (f64: far regions exceed f32's metre precision), and
/// its heading in radians (0 faces east, counter-clockwise positive).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fix {
    pub x: f64,
    pub y: f64,
    pub yaw: f32,
}

impl Fix {
    /// From a region-local pose as updates carry it.
    pub fn from_local(region: RegionId, pos: Vec3, rot: Quat) -> Fix {
        let size = f64::from(REGION_SIZE);
        Fix {
            x: f64::from(region.x) * size + f64::from(pos.x),
            y: f64::from(region.y) * size + f64::from(pos.y),
            yaw: yaw_of(rot),
        }
    }
}

/// Heading around the vertical axis of a rotation.
pub fn yaw_of(q: Quat) -> f32 {
    (2.0 * (q.w * q.z + q.x * q.y)).atan2(1.0 - 2.0 * (q.y * q.y + q.z * q.z))
}

/// One bot's intentions.
#[derive(Debug)]
pub struct Pilot {
    behaviour: Behaviour,
    home: RegionId,
    rng: SmallRng,
    target: (f64, f64),
    /// Commuters: heading for the neighbour (true) or home (false).
    outbound: bool,
    arrived_at: Option<Instant>,
    pause: Duration,
    best: f64,
    progress_at: Instant,
    lane: f64,
}

impl Pilot {
    pub fn new(behaviour: Behaviour, home: RegionId, seed: u64, now: Instant) -> Pilot {
        let mut rng = SmallRng::seed_from_u64(seed);
        let lane = rng.random_range(-60.0..60.0);
        let mut pilot = Pilot {
            behaviour,
            home,
            rng,
            target: (0.0, 0.0),
            outbound: true,
            arrived_at: None,
            pause: Duration::ZERO,
            best: f64::INFINITY,
            progress_at: now,
            lane,
        };
        pilot.target = pilot.next_target();
        pilot
    }

    pub fn target(&self) -> (f64, f64) {
        self.target
    }

    fn local_to_world(&self, region: RegionId, x: f64, y: f64) -> (f64, f64) {
        let size = f64::from(REGION_SIZE);
        (f64::from(region.x) * size + x, f64::from(region.y) * size + y)
    }

    fn next_target(&mut self) -> (f64, f64) {
        let size = f64::from(REGION_SIZE);
        let margin = f64::from(WANDER_MARGIN_M);
        match self.behaviour {
            Behaviour::Wander => {
                let x = self.rng.random_range(margin..size - margin);
                let y = self.rng.random_range(margin..size - margin);
                self.local_to_world(self.home, x, y)
            }
            Behaviour::Club => {
                let r = f64::from(CLUB_RADIUS_M) * self.rng.random_range(0.0..1.0f64).sqrt();
                let a = self.rng.random_range(0.0..std::f64::consts::TAU);
                self.local_to_world(self.home, size / 2.0 + r * a.cos(), size / 2.0 + r * a.sin())
            }
            Behaviour::Commute => {
                let reach = f64::from(COMMUTE_REACH_M);
                let y = size / 2.0 + self.lane;
                let east = RegionId::new(self.home.x.saturating_add(1), self.home.y);
                if self.outbound {
                    self.local_to_world(east, reach, y)
                } else {
                    self.local_to_world(self.home, size - reach, y)
                }
            }
        }
    }

    fn retarget(&mut self, now: Instant) {
        self.outbound = !self.outbound;
        self.target = self.next_target();
        self.arrived_at = None;
        self.best = f64::INFINITY;
        self.progress_at = now;
    }

    /// The controls to hold now, given the avatar's last known fix.
    pub fn think(&mut self, now: Instant, fix: Option<Fix>) -> Controls {
        let Some(fix) = fix else { return Controls::default() };
        let (dx, dy) = (self.target.0 - fix.x, self.target.1 - fix.y);
        let dist = (dx * dx + dy * dy).sqrt();
        if let Some(at) = self.arrived_at {
            return match self.behaviour {
                // Dancing: turn one way, then the other, every second.
                Behaviour::Club => {
                    let phase = now.duration_since(at).as_secs().is_multiple_of(2);
                    Controls { turn: if phase { 1 } else { -1 }, ..Controls::default() }
                }
                _ => {
                    if now.duration_since(at) >= self.pause {
                        self.retarget(now);
                    }
                    Controls::default()
                }
            };
        }
        if dist < f64::from(ARRIVE_M) {
            self.arrived_at = Some(now);
            self.pause = match self.behaviour {
                Behaviour::Wander => Duration::from_millis(self.rng.random_range(0..MAX_PAUSE_MS)),
                _ => Duration::ZERO,
            };
            return Controls::default();
        }
        if dist < self.best - 0.5 {
            self.best = dist;
            self.progress_at = now;
        } else if now.duration_since(self.progress_at) >= Duration::from_millis(STUCK_MS) {
            // Blocked (a border that does not let it through, a slope): try the other way.
            self.retarget(now);
            return Controls::default();
        }
        let want = dy.atan2(dx) as f32;
        let mut err = want - fix.yaw;
        while err > std::f32::consts::PI {
            err -= std::f32::consts::TAU;
        }
        while err < -std::f32::consts::PI {
            err += std::f32::consts::TAU;
        }
        let turn = if err > STEER_DEADBAND_RAD {
            1
        } else if err < -STEER_DEADBAND_RAD {
            -1
        } else {
            0
        };
        let forward = if err.abs() < TURN_IN_PLACE_RAD { 1 } else { 0 };
        // Commuters are in a hurry: they run, so they cross often.
        let run = self.behaviour == Behaviour::Commute;
        Controls { forward, turn, run, ..Controls::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pilot_facing_away_from_its_target_turns_in_place_first() {
        let now = Instant::now();
        let mut p = Pilot::new(Behaviour::Club, RegionId::new(1, 1), 1, now);
        let (tx, ty) = p.target();
        // Standing 30 m east of the target, facing east.
        let c = p.think(now, Some(Fix { x: tx + 30.0, y: ty, yaw: 0.0 }));
        assert_eq!((c.forward, c.turn.abs()), (0, 1));
        // Facing west, toward it: walk straight.
        let c = p.think(now, Some(Fix { x: tx + 30.0, y: ty, yaw: std::f32::consts::PI }));
        assert_eq!((c.forward, c.turn), (1, 0));
    }

    #[test]
    fn a_commuter_heads_across_the_east_border_and_back() {
        let now = Instant::now();
        let mut p = Pilot::new(Behaviour::Commute, RegionId::new(1, 1), 7, now);
        assert!(p.target().0 > 512.0, "first leg ends in region (2, 1): {:?}", p.target());
        let (tx, ty) = p.target();
        p.think(now, Some(Fix { x: tx, y: ty, yaw: 0.0 }));
        p.think(now, Some(Fix { x: tx, y: ty, yaw: 0.0 }));
        assert!(p.target().0 < 512.0, "then back home: {:?}", p.target());
    }

    #[test]
    fn yaw_is_read_back_from_a_rotation_about_the_vertical() {
        let q = Quat::from_rotation_z(1.0);
        assert!((yaw_of(q) - 1.0).abs() < 1e-5);
    }
}
