//! The default population: wandering avatars and moving objects, driven from outside the
//! regions by ordinary inputs as people would, plus the scripted life of living.rs. Inputs go
//! to whichever host has the region now, so the population follows regions that migrate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use world::limits::REGION_SIZE;
use world::{Controls, EntityId, Input, Kind, ObjectEdit, ObjectSpec, Quat, RegionId, Shape, Vec3};

/// How often wanderers reconsider where they are going.
const STEER_EVERY: Duration = Duration::from_millis(500);

pub struct Population {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Avatar ids of the default population: the two high bits set, so they never meet object
/// ids (region-prefixed, high bits clear) nor gateway agents (only the top bit set).
fn wanderer_id(region: RegionId, k: usize) -> EntityId {
    EntityId(WANDERER_BIT | u64::from(region.x) << 40 | u64::from(region.y) << 24 | k as u64)
}

const WANDERER_BIT: u64 = 0b11 << 62;

fn is_wanderer(id: EntityId) -> bool {
    id.0 & WANDERER_BIT == WANDERER_BIT
}

impl Population {
    /// Populates `regions` (unless `populate` is false: a kept world has its things already)
    /// and steers the wanderers and throws balls in them from then on.
    pub fn start(
        hosts: Vec<host::Host>,
        regions: &[RegionId],
        populate: bool,
        avatars: usize,
        objects: usize,
        seed: u32,
    ) -> Population {
        let grid = Grid(hosts);
        let mut rng = SmallRng::seed_from_u64(u64::from(seed));
        for &r in regions.iter().filter(|_| populate) {
            for k in 0..avatars {
                let pos = Vec3::new(rng.random_range(20.0..236.0), rng.random_range(20.0..236.0), 0.0);
                grid.send(
                    r,
                    Input::AddAvatar {
                        id: wanderer_id(r, k),
                        name: format!("Wanderer {k}"),
                        owner: 0,
                        pos: Some(pos),
                    },
                );
            }
            for k in 0..objects {
                grid.send(r, Input::CreateObject { tag: k as u64, spec: random_object(&mut rng, k) });
            }
            // The land lives on by itself: scripted animals, plants, workers and a vehicle.
            for input in crate::living::inputs(r, crate::living::Life::default(), u64::from(seed)) {
                grid.send(r, input);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let regions = regions.to_vec();
            std::thread::Builder::new()
                .name("population".into())
                .spawn(move || steer(&grid, &regions, &stop, rng))
                .expect("spawning the population thread")
        };
        Population { stop, thread: Some(thread) }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn random_object(rng: &mut SmallRng, k: usize) -> ObjectSpec {
    let shapes = [Shape::Box, Shape::Sphere, Shape::Cylinder, Shape::Cone, Shape::Torus];
    let pos = Vec3::new(rng.random_range(0.0..REGION_SIZE), rng.random_range(0.0..REGION_SIZE), 0.0);
    let s = rng.random_range(0.3..3.0);
    let mut spec = ObjectSpec {
        name: format!("Object {k}"),
        shape: shapes[k % shapes.len()],
        pos,
        rot: Quat::from_rotation_z(rng.random_range(0.0..std::f32::consts::TAU)),
        scale: Vec3::new(s, s, s),
        ..Default::default()
    };
    match k % 10 {
        // A glider: drifts above the ground forever, crossing into neighbour regions and
        // bouncing off the world's edges.
        0 => {
            spec.pos.z = rng.random_range(30.0..60.0);
            spec.vel = Vec3::new(rng.random_range(-4.0..4.0), rng.random_range(-4.0..4.0), 0.0);
            spec.name = format!("Glider {k}");
        }
        // A ball: physical, gets thrown now and then.
        1 => {
            spec.physical = true;
            spec.shape = Shape::Sphere;
            spec.name = format!("Ball {k}");
        }
        _ => {}
    }
    spec
}

/// The hosts of the grid, asked in turn for a region.
struct Grid(Vec<host::Host>);

impl Grid {
    fn send(&self, r: RegionId, input: Input) {
        let mut input = Some(input);
        for h in &self.0 {
            if h.holds(r) {
                if let Some(i) = input.take() {
                    let _ = h.send(r, i);
                }
                return;
            }
        }
    }

    fn with_region<T>(&self, r: RegionId, f: impl FnOnce(&world::Region) -> T) -> Option<T> {
        let h = self.0.iter().find(|h| h.holds(r))?;
        h.with_region(r, f).ok()
    }
}

fn steer(host: &Grid, regions: &[RegionId], stop: &AtomicBool, mut rng: SmallRng) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(STEER_EVERY);
        for &r in regions {
            // Wanderers cross borders: steer those that are here now, wherever they started.
            let here: Vec<EntityId> = host
                .with_region(r, |region| {
                    region.entities().filter(|e| e.is_avatar() && is_wanderer(e.id)).map(|e| e.id).collect()
                })
                .unwrap_or_default();
            for id in here {
                if rng.random_bool(0.3) {
                    let controls = Controls {
                        forward: if rng.random_bool(0.8) { 1 } else { 0 },
                        turn: rng.random_range(-1..=1),
                        run: rng.random_bool(0.2),
                        jump: rng.random_bool(0.05),
                        ..Default::default()
                    };
                    host.send(r, Input::Controls { id, controls });
                }
            }
            if rng.random_bool(0.5) {
                throw_a_ball(host, r, &mut rng);
            }
        }
    }
}

fn throw_a_ball(host: &Grid, r: RegionId, rng: &mut SmallRng) {
    let balls: Vec<EntityId> = host
        .with_region(r, |region| {
            region
                .entities()
                .filter(|e| matches!(&e.kind, Kind::Object(o) if o.physical) && e.vel == Vec3::ZERO)
                .map(|e| e.id)
                .collect()
        })
        .unwrap_or_default();
    if balls.is_empty() {
        return;
    }
    let id = balls[rng.random_range(0..balls.len())];
    let vel = Vec3::new(rng.random_range(-6.0..6.0), rng.random_range(-6.0..6.0), rng.random_range(4.0..9.0));
    host.send(r, Input::EditObject { id, edit: ObjectEdit { vel: Some(vel), ..Default::default() } });
}
