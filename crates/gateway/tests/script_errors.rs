//! A script that stops with an error is told to its owner's session, once, and to nobody else.

mod support;

use proto::{Encoding, ServerMsg};
use support::*;
use world::{Input, ModuleHash, ObjectSpec, Vec3};

/// Hostile: its `start` event never returns, so fuel stops it on its first tick.
const LOOP_AT_START: &str = r#"(module
  (memory 1 1)
  (func (export "start") (loop $forever (br $forever))))"#;

/// Reads until a `script_error` arrives, or gives up after `frames` other messages.
async fn next_script_error(c: &mut Raw, frames: usize) -> Option<ServerMsg> {
    for _ in 0..frames {
        match c.recv().await? {
            m @ ServerMsg::ScriptError { .. } => return Some(m),
            ServerMsg::Error { code, message } if code.closes_session() => {
                panic!("session closed: {code:?} {message}")
            }
            _ => {}
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_runs_away_is_reported_to_its_owner_and_to_no_one_else() {
    let g = grid(config()).await;
    let ada_pass = g.gateway.guest_token("Ada").unwrap();
    let bob_pass = g.gateway.guest_token("Bob").unwrap();
    let ada_id: u64 = ada_pass.agent.parse().unwrap();
    let mut ada = Raw::hello(&ada_pass.url, &ada_pass.token, Encoding::Binary).await;
    let mut bob = Raw::hello(&bob_pass.url, &bob_pass.token, Encoding::Json).await;
    // Both watch the region before the script exists.
    ada.next_update().await.expect("ada's stream starts");
    bob.next_update().await.expect("bob's stream starts");

    let module = LOOP_AT_START.as_bytes().to_vec();
    let spec = ObjectSpec {
        name: "Runaway".into(),
        owner: ada_id,
        pos: Vec3::new(120.0, 128.0, 30.0),
        ..ObjectSpec::default()
    };
    for input in [
        Input::AddModule { bytes: module.clone() },
        Input::DefineTemplate { name: "runaway".into(), spec, scripts: vec![ModuleHash::of(&module)] },
        Input::Rez { tag: 1, template: "runaway".into(), pos: Vec3::new(120.0, 128.0, 30.0) },
    ] {
        g.host.input(HOME, input);
    }

    let Some(ServerMsg::ScriptError { object, script, region, kind, message }) =
        next_script_error(&mut ada, 900).await
    else {
        panic!("the owner's session closed without a script_error")
    };
    assert_eq!((region, kind.as_str()), (HOME, "out_of_fuel"), "{message}");
    assert!(message.contains("fuel"), "{message}");
    let host = g.host.host().clone();
    let (owner, scripts_in_object) = host
        .with_region(HOME, |r| {
            let owner = r.entity(object).map(|e| e.owner);
            (owner, r.scripts_of(object).map(|s| s.id.0).collect::<Vec<_>>())
        })
        .unwrap();
    assert_eq!(owner, Some(ada_id), "the report names the owner's object");
    assert_eq!(scripts_in_object, vec![script]);

    // The control API's view of the region lists it with its error.
    let stats = host.stats(HOME).unwrap();
    assert_eq!(stats.script_errors, 1);
    assert_eq!(stats.stopped_scripts.len(), 1);
    assert_eq!(stats.stopped_scripts[0].kind, "out_of_fuel");
    assert_eq!(stats.stopped_scripts[0].object, object.0);

    // Bob, in the same region, hears nothing of it; and Ada hears it only once, though the
    // region ticks on (the next 90 frames, some two seconds, bring no other).
    assert_eq!(next_script_error(&mut bob, 90).await, None);
    assert_eq!(next_script_error(&mut ada, 90).await, None);
    assert_eq!(g.gateway.stats().script_errors_delivered, 1);
}
