//! The living part of the default world: grazing animals, spreading plants, NPC workers, a
//! vehicle on a loop road and a ferry that shuttles across region borders, all user scripts in WebAssembly text (crates/terrane/world/*.wat),
//! put into a region by ordinary inputs. The modules travel inside the region's state, so
//! whichever host runs the region compiles them; nothing else needs installing.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use world::limits::REGION_SIZE;
use world::{Input, ModuleHash, ObjectSpec, RegionId, Shape, Vec3};

pub const GRAZER_WAT: &str = include_str!("../world/grazer.wat");
pub const PLANT_WAT: &str = include_str!("../world/plant.wat");
pub const WORKER_WAT: &str = include_str!("../world/worker.wat");
pub const VEHICLE_WAT: &str = include_str!("../world/vehicle.wat");
pub const FERRY_WAT: &str = include_str!("../world/ferry.wat");
/// Every module of the living world.
pub const MODULES: [&[u8]; 5] = [
    GRAZER_WAT.as_bytes(),
    PLANT_WAT.as_bytes(),
    WORKER_WAT.as_bytes(),
    VEHICLE_WAT.as_bytes(),
    FERRY_WAT.as_bytes(),
];

/// How much life one region gets.
#[derive(Clone, Copy, Debug)]
pub struct Life {
    pub grazers: usize,
    pub plants: usize,
    pub workers: usize,
    pub vehicles: usize,
    /// Ferries shuttling east and west across the region's borders (scripts that cross).
    pub ferries: usize,
    /// Markers along the vehicle's loop road (plain objects, no scripts).
    pub road_markers: usize,
}

impl Default for Life {
    fn default() -> Life {
        Life { grazers: 12, plants: 30, workers: 4, vehicles: 1, ferries: 1, road_markers: 24 }
    }
}

/// Radius of the loop road about the region's centre; `vehicle.wat` steers onto it.
pub const ROAD_RADIUS: f32 = 80.0;

fn template(name: &str, shape: Shape, scale: Vec3, text: &str, module: ModuleHash) -> Input {
    Input::DefineTemplate {
        name: name.into(),
        spec: ObjectSpec { name: name.into(), shape, scale, text: text.into(), ..Default::default() },
        scripts: vec![module],
    }
}

/// The inputs that bring `life` to a region: the modules, the templates (scripts create
/// plants from "plant"), and the creatures, placed from `seed`. One tick's worth.
pub fn inputs(region: RegionId, life: Life, seed: u64) -> Vec<Input> {
    let mut rng = SmallRng::seed_from_u64(seed ^ (u64::from(region.x) << 16 | u64::from(region.y)));
    let hash = |wat: &str| ModuleHash::of(wat.as_bytes());
    let mut v: Vec<Input> = [GRAZER_WAT, PLANT_WAT, WORKER_WAT, VEHICLE_WAT, FERRY_WAT]
        .iter()
        .map(|w| Input::AddModule { bytes: w.as_bytes().to_vec() })
        .collect();
    v.push(template("grazer", Shape::Sphere, Vec3::new(1.4, 0.8, 0.9), "", hash(GRAZER_WAT)));
    v.push(template("plant", Shape::Cylinder, Vec3::new(0.3, 0.3, 0.45), "", hash(PLANT_WAT)));
    v.push(template("worker", Shape::Cylinder, Vec3::new(0.5, 0.5, 1.8), "", hash(WORKER_WAT)));
    v.push(template("vehicle", Shape::Box, Vec3::new(3.0, 1.6, 1.2), "", hash(VEHICLE_WAT)));
    v.push(template("ferry", Shape::Box, Vec3::new(6.0, 2.5, 1.5), "", hash(FERRY_WAT)));
    let mut tag = 1 << 40;
    let mut rez = |v: &mut Vec<Input>, template: &str, pos: Vec3| {
        tag += 1;
        v.push(Input::Rez { tag, template: template.into(), pos });
    };
    let centre = REGION_SIZE / 2.0;
    // A meadow away from the road, where the herd starts.
    let meadow =
        Vec3::new(centre - 30.0 + rng.random_range(-10.0..10.0), centre + rng.random_range(-10.0..10.0), 0.0);
    for _ in 0..life.plants {
        let p = meadow + Vec3::new(rng.random_range(-35.0..35.0), rng.random_range(-35.0..35.0), 0.0);
        rez(&mut v, "plant", p);
    }
    for _ in 0..life.grazers {
        let p = meadow + Vec3::new(rng.random_range(-12.0..12.0), rng.random_range(-12.0..12.0), 0.0);
        rez(&mut v, "grazer", p);
    }
    for _ in 0..life.workers {
        let p = Vec3::new(rng.random_range(30.0..226.0), rng.random_range(30.0..226.0), 0.0);
        rez(&mut v, "worker", p);
    }
    for k in 0..life.vehicles {
        let a = k as f32 * std::f32::consts::TAU / life.vehicles.max(1) as f32;
        rez(
            &mut v,
            "vehicle",
            Vec3::new(centre + ROAD_RADIUS * a.cos(), centre + ROAD_RADIUS * a.sin(), 0.0),
        );
    }
    for k in 0..life.ferries {
        // North of the loop road, on lanes of their own.
        let y = centre + ROAD_RADIUS + 15.0 + 8.0 * k as f32;
        rez(&mut v, "ferry", Vec3::new(centre, y.min(REGION_SIZE - 5.0), 0.0));
    }
    for k in 0..life.road_markers {
        let a = k as f32 * std::f32::consts::TAU / life.road_markers.max(1) as f32;
        let spec = ObjectSpec {
            name: "road".into(),
            shape: Shape::Box,
            scale: Vec3::new(2.0, 2.0, 0.1),
            pos: Vec3::new(
                centre + (ROAD_RADIUS + 3.0) * a.cos(),
                centre + (ROAD_RADIUS + 3.0) * a.sin(),
                0.0,
            ),
            ..Default::default()
        };
        v.push(Input::CreateObject { tag: (1 << 41) + k as u64, spec });
    }
    v
}

/// The scripts' part of `terrane run`'s status line: how many, how busy, what they cost
/// (the worst region's mean script time per tick as a share of its tick budget), errors.
pub fn status(stats: &[host::stats::RegionStats]) -> String {
    let scripts: usize = stats.iter().map(|s| s.scripts).sum();
    let events: f64 = stats.iter().map(|s| s.script_events_per_s).sum();
    let errors: usize = stats.iter().map(|s| s.script_errors).sum();
    let share = stats
        .iter()
        .filter(|s| s.budget_ms > 0.0)
        .map(|s| s.script_time_ms / s.budget_ms)
        .fold(0.0, f64::max);
    format!(
        " · scripts {scripts} ({errors} stopped) · script events {events:.0}/s · script time ≤ {:.1}% of a tick",
        share * 100.0
    )
}

#[cfg(test)]
mod tests {
    //! The default world's scripts, run the way a host runs them but driven by a fixed clock.
    use super::*;
    use host::scripting::{RegionScripts, ScriptConfig, ScriptHost};
    use world::{Controls, EntityId, Region};

    const R: RegionId = RegionId::new(1, 1);
    const TICK_US: u64 = 22_222;
    const WALKER: EntityId = EntityId(0xA000_0001);

    fn script_host(threads: usize) -> ScriptHost {
        ScriptHost::new(ScriptConfig { threads, time_budget: false, max_scripts: 2_000, module_cache: None })
            .unwrap()
    }

    /// The inputs of tick `t`: the life at tick 0, an avatar who walks in circles through the
    /// meadow and touches things now and then.
    fn inputs_at(t: u64, region: &Region) -> Vec<Input> {
        match t {
            0 => {
                let mut v = inputs(R, Life::default(), 7);
                v.push(Input::AddAvatar {
                    id: WALKER,
                    name: "Walker".into(),
                    owner: 1,
                    pos: Some(Vec3::new(98.0, 128.0, 0.0)),
                });
                v
            }
            1 => vec![Input::Controls {
                id: WALKER,
                controls: Controls { forward: 1, turn: 1, ..Default::default() },
            }],
            t if t % 50 == 0 => {
                let object = region.entities().find(|e| e.name == "grazer").map(|e| e.id);
                object.map(|object| vec![Input::Touch { avatar: WALKER, object }]).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    fn run(threads: usize, ticks: u64) -> (Region, RegionScripts, ScriptHost) {
        let host = script_host(threads);
        let mut region = Region::new(R, 3);
        let mut scripts = RegionScripts::default();
        for t in 0..ticks {
            let inputs = inputs_at(t, &region);
            let (out, _) = scripts.tick_on(&host, &mut region, (t + 1) * TICK_US, inputs);
            assert!(out.rejected.is_empty(), "tick {t}: {:?}", out.rejected);
        }
        (region, scripts, host)
    }

    #[test]
    fn every_script_of_the_default_world_loads_and_runs_without_error() {
        let (region, scripts, _) = run(1, 200);
        assert!(scripts.broken().is_empty(), "{:?}", scripts.broken());
        for s in scripts.live() {
            assert!(s.error().is_none(), "{:?}: {:?}", s.id(), s.error());
        }
        let life = Life::default();
        let scripted = life.grazers + life.plants + life.workers + life.vehicles;
        assert!(region.script_count() >= scripted - 4, "plants may be eaten, not many more");
        assert!(scripts.stats().events_total > 200, "{:?}", scripts.stats());
    }

    #[test]
    fn the_default_world_after_1000_ticks_is_the_same_on_one_thread_and_on_two() {
        let (one, ..) = run(1, 1_000);
        let (two, ..) = run(2, 1_000);
        assert_eq!(one.state_hash(), two.state_hash());
        assert_eq!(one.canonical_bytes(), two.canonical_bytes());
    }

    #[test]
    fn the_vehicle_drives_round_its_loop_and_workers_walk() {
        let (region, ..) = run(1, 400);
        let vehicle = region.entities().find(|e| e.name == "vehicle").unwrap();
        let r = (vehicle.pos - Vec3::new(128.0, 128.0, vehicle.pos.z)).length();
        assert!((ROAD_RADIUS - 5.0..ROAD_RADIUS + 5.0).contains(&r), "vehicle {r} m from the centre");
        assert!(vehicle.vel.length() > 4.0);
        assert!(region
            .entities()
            .filter(|e| e.name == "worker")
            .any(|w| w.vel.length() > 1.0 || !w.text.is_empty()));
    }

    #[test]
    fn a_region_restored_from_its_snapshot_on_a_fresh_host_goes_on_exactly_like_the_original() {
        let (mut original, mut live, other) = run(1, 300);
        // Another engine, another pool size: only the region's bytes cross over.
        let host = script_host(2);
        let mut copy = Region::from_snapshot(&original.snapshot()).unwrap();
        let mut fresh = RegionScripts::default();
        assert_eq!(copy.state_hash(), original.state_hash());
        for t in 300..600 {
            let inputs = inputs_at(t, &original);
            live.tick_on(&other, &mut original, (t + 1) * TICK_US, inputs.clone());
            fresh.tick_on(&host, &mut copy, (t + 1) * TICK_US, inputs);
            assert_eq!(copy.state_hash(), original.state_hash(), "diverged at tick {t}");
        }
    }
}
