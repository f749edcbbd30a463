//! Both backends keep the compare-and-swap contract; the memory one persists.

use std::sync::Arc;

use directory::{Directory, HttpDirectory, MemoryDirectory, Placement};
use world::RegionId;

async fn contract(dir: &dyn Directory) {
    let r = RegionId::new(1, 2);
    let at = |host: &str, epoch| Placement { host: host.into(), epoch };
    assert_eq!(dir.get(r).await.unwrap(), None);
    assert!(dir.compare_and_swap(r, None, at("a", 1)).await.unwrap());
    assert!(!dir.compare_and_swap(r, None, at("b", 1)).await.unwrap(), "only one first owner");
    assert!(!dir.compare_and_swap(r, Some(7), at("b", 8)).await.unwrap(), "a stale epoch loses");
    assert!(dir.compare_and_swap(r, Some(1), at("b", 2)).await.unwrap());
    assert!(!dir.compare_and_swap(r, Some(1), at("c", 2)).await.unwrap(), "the same epoch moves once");
    assert_eq!(dir.get(r).await.unwrap(), Some(at("b", 2)));
    assert_eq!(dir.list().await.unwrap(), vec![(r, at("b", 2))]);
}

#[tokio::test]
async fn the_memory_directory_keeps_the_contract_and_survives_a_restart() {
    contract(&MemoryDirectory::new()).await;
    let path = std::env::temp_dir().join(format!("terrane-dir-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    contract(&MemoryDirectory::persistent(path.clone()).unwrap()).await;
    let again = MemoryDirectory::persistent(path.clone()).unwrap();
    assert_eq!(again.get(RegionId::new(1, 2)).await.unwrap().unwrap().epoch, 2);
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn the_http_directory_keeps_the_contract() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = directory::router(Arc::new(MemoryDirectory::new()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    contract(&HttpDirectory::new(&format!("http://{addr}"))).await;
}

#[tokio::test]
async fn racing_swaps_have_one_winner() {
    let dir = Arc::new(MemoryDirectory::new());
    let r = RegionId::new(0, 0);
    dir.compare_and_swap(r, None, Placement { host: "a".into(), epoch: 1 }).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let dir = dir.clone();
            tokio::spawn(async move {
                dir.compare_and_swap(r, Some(1), Placement { host: format!("h{i}"), epoch: 2 }).await.unwrap()
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        wins += t.await.unwrap() as u32;
    }
    assert_eq!(wins, 1);
}
