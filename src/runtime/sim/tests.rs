//! Unit tests of the simulated runtime: lifecycle, label filtering, events
//! and each injectable failure.

use super::*;
use crate::runtime::{ContainerRuntimeExt, Protocol};
use futures::StreamExt;

const IMAGE: &str = "flocker-test/busybox:latest";

fn labels(node: &str) -> Labels {
    [
        ("flocker.cluster".to_string(), "c1".to_string()),
        ("flocker.node".to_string(), node.to_string()),
    ]
    .into()
}

fn spec(name: &str, node: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: IMAGE.into(),
        entrypoint: None,
        labels: labels(node),
        ..Default::default()
    }
}

fn port(ip: &str, host_port: u16) -> PortBinding {
    PortBinding {
        host_ip: ip.parse().unwrap(),
        host_port,
        container_port: 80,
        protocol: Protocol::Tcp,
    }
}

fn sim() -> SimRuntime {
    let rt = SimRuntime::new("n1");
    rt.add_image(IMAGE);
    rt
}

async fn next_event(stream: &mut EventStream) -> Result<ContainerEvent, RuntimeError> {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an event within 5s")
        .expect("the stream is open")
}

#[tokio::test]
async fn lifecycle_create_start_stop_remove() {
    let rt = sim();
    let id = rt.create(&spec("n1-web", "n1")).await.unwrap();
    let info = rt.inspect(&id).await.unwrap().unwrap();
    assert_eq!(info.state, ContainerState::Created);
    assert_eq!(info.exit_code, None);
    assert!(info.image_id.starts_with("sha256:"));

    rt.start(&id).await.unwrap();
    rt.start(&id).await.unwrap(); // a no-op, as Docker's 304
    let info = rt
        .inspect(&ContainerId::from("n1-web"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.state, ContainerState::Running);
    assert!(info.started_at.is_some());

    assert!(matches!(
        rt.remove(&id, false).await,
        Err(RuntimeError::Engine { status: 409, .. })
    ));
    rt.stop(&id, Duration::from_secs(1)).await.unwrap();
    rt.stop(&id, Duration::from_secs(1)).await.unwrap();
    let info = rt.inspect(&id).await.unwrap().unwrap();
    assert_eq!(info.state, ContainerState::Exited);
    assert_eq!(info.exit_code, Some(EXIT_SIGTERM));
    assert_eq!(info.restart_count, 0);

    rt.remove(&id, false).await.unwrap();
    assert_eq!(rt.inspect(&id).await.unwrap(), None);
    assert_eq!(
        rt.remove(&id, true).await,
        Err(RuntimeError::ContainerNotFound(id.to_string()))
    );
}

#[tokio::test]
async fn names_are_unique_per_engine() {
    let rt = sim();
    rt.create(&spec("web", "n1")).await.unwrap();
    let e = rt.create(&spec("web", "n2")).await.unwrap_err();
    assert!(matches!(e, RuntimeError::NameInUse { .. }), "{e}");
}

#[tokio::test]
async fn list_filters_by_every_label() {
    let rt = sim();
    rt.create(&spec("n1-a", "n1")).await.unwrap();
    rt.create(&spec("n1-b", "n1")).await.unwrap();
    rt.create(&spec("n2-a", "n2")).await.unwrap();
    let mut unlabelled = spec("other", "n1");
    unlabelled.labels.clear();
    rt.create(&unlabelled).await.unwrap();

    let names: Vec<String> = rt
        .list(&labels("n1"))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["n1-a", "n1-b"]);
    assert_eq!(rt.list(&labels("n3")).await.unwrap(), vec![]);
    assert_eq!(rt.all_containers().len(), 4);
}

#[tokio::test]
async fn missing_image_then_pull_from_registry() {
    let rt = SimRuntime::new("n1");
    let e = rt.create(&spec("web", "n1")).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("image {IMAGE} not present on this node")
    );
    assert!(!rt.image_present(IMAGE).await.unwrap());

    let e = rt.pull_image(IMAGE).await.unwrap_err();
    assert!(e.to_string().contains("no registry is reachable"), "{e}");

    rt.add_registry_image(IMAGE);
    let id = rt.pull_image(IMAGE).await.unwrap();
    assert_eq!(rt.image_id(IMAGE).await.unwrap(), Some(id));
    rt.create(&spec("web", "n1")).await.unwrap();
}

/// The engine `flocker node --engine sim` runs: any reference can be pulled,
/// an image is still absent until pulled (the agent's path), and the same
/// reference always gets the same id.
#[tokio::test]
async fn an_engine_with_every_image_pulls_any_reference() {
    let rt = SimRuntime::with_every_image("n1");
    let reference = "example.org/made-up/app:7";
    assert!(!rt.image_present(reference).await.unwrap());
    let id = rt.pull_image(reference).await.unwrap();
    assert_eq!(rt.image_id(reference).await.unwrap(), Some(id.clone()));
    assert_eq!(
        SimRuntime::with_every_image("n2")
            .pull_image(reference)
            .await
            .unwrap(),
        id
    );
    let mut web = spec("web", "n1");
    web.image = reference.into();
    rt.create(&web).await.unwrap();
}

#[tokio::test]
async fn port_conflicts_between_containers_and_outside_processes() {
    let rt = sim();
    let mut a = spec("a", "n1");
    a.ports = vec![port("127.0.0.2", 8080)];
    let mut b = spec("b", "n2");
    b.ports = vec![port("127.0.0.2", 8080)];
    let mut c = spec("c", "n3");
    c.ports = vec![port("127.0.0.3", 8080)];

    let a_id = rt.run(&a).await.unwrap();
    let e = rt.run(&b).await.unwrap_err();
    assert!(
        matches!(&e, RuntimeError::PortAllocated { address: Some(addr), .. } if addr == "127.0.0.2:8080"),
        "{e}"
    );
    // `run` removed the container that could not start.
    assert!(rt.inspect(&ContainerId::from("b")).await.unwrap().is_none());
    // Another node's publish ip does not collide.
    rt.run(&c).await.unwrap();

    // Once `a` stops, its port is free again.
    rt.stop(&a_id, Duration::ZERO).await.unwrap();
    rt.run(&b).await.unwrap();

    rt.occupy_port("0.0.0.0".parse().unwrap(), 9090);
    let mut d = spec("d", "n1");
    d.ports = vec![port("127.0.0.2", 9090)];
    let d_id = rt.create(&d).await.unwrap();
    let e = rt.start(&d_id).await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with("port 127.0.0.2:9090 already allocated"),
        "{e}"
    );
    let info = rt.inspect(&d_id).await.unwrap().unwrap();
    assert_eq!(info.state, ContainerState::Created);
    assert!(info.error.is_some());
    rt.release_port("0.0.0.0".parse().unwrap(), 9090);
    rt.start(&d_id).await.unwrap();
}

#[tokio::test]
async fn events_follow_the_lifecycle_and_filter_labels() {
    let rt = sim();
    let mut events = rt.events(&labels("n1")).await.unwrap();
    let other = rt.run(&spec("n2-web", "n2")).await.unwrap();
    let id = rt.run(&spec("n1-web", "n1")).await.unwrap();
    assert!(rt.exit(&id, 3));
    assert!(!rt.exit(&id, 3), "an exited container cannot exit again");
    rt.remove(&id, false).await.unwrap();
    assert!(rt.exit(&other, 0));

    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = next_event(&mut events).await.unwrap();
        assert_eq!(e.id, id, "only n1's container: {e:?}");
        seen.push(e);
    }
    let actions: Vec<EventAction> = seen.iter().map(|e| e.action.clone()).collect();
    assert_eq!(
        actions,
        [
            EventAction::Create,
            EventAction::Start,
            EventAction::Die,
            EventAction::Destroy
        ]
    );
    assert_eq!(seen[2].exit_code, Some(3));
    assert!(seen.windows(2).all(|w| w[0].time < w[1].time));
}

#[tokio::test]
async fn oom_kill_and_outside_removal() {
    let rt = sim();
    let mut events = rt.events(&Labels::new()).await.unwrap();
    let id = rt.run(&spec("web", "n1")).await.unwrap();
    assert!(rt.oom_kill(&id));
    let info = rt.inspect(&id).await.unwrap().unwrap();
    assert!(info.oom_killed);
    assert_eq!(info.exit_code, Some(EXIT_SIGKILL));

    rt.start(&id).await.unwrap();
    assert!(rt.remove_outside(&id));
    assert!(rt.inspect(&id).await.unwrap().is_none());

    let mut actions = Vec::new();
    for _ in 0..8 {
        actions.push(next_event(&mut events).await.unwrap().action);
    }
    assert_eq!(
        actions,
        [
            EventAction::Create,
            EventAction::Start,
            EventAction::Oom,
            EventAction::Die,
            EventAction::Start,
            EventAction::Kill,
            EventAction::Die,
            EventAction::Destroy
        ]
    );
}

#[tokio::test]
async fn engine_down_fails_calls_and_ends_streams() {
    let rt = sim();
    let id = rt.run(&spec("web", "n1")).await.unwrap();
    let mut events = rt.events(&Labels::new()).await.unwrap();
    rt.set_engine_down(true);
    let e = next_event(&mut events).await.unwrap_err();
    assert!(e.is_engine_down());
    assert_eq!(
        e.to_string(),
        "Docker engine unreachable at sim:n1: the simulated engine went down"
    );
    assert!(events.next().await.is_none(), "an error is the last item");
    assert!(rt.ping().await.unwrap_err().is_engine_down());
    assert!(rt.list(&Labels::new()).await.unwrap_err().is_engine_down());
    assert!(rt.events(&Labels::new()).await.is_err());

    rt.set_engine_down(false);
    rt.ping().await.unwrap();
    // Containers survive, as with live restore.
    let info = rt.inspect(&id).await.unwrap().unwrap();
    assert_eq!(info.state, ContainerState::Running);
}

#[tokio::test]
async fn injected_faults_hit_their_operation_once() {
    let rt = sim();
    let fault = RuntimeError::Engine {
        operation: "start",
        status: 500,
        message: "injected".into(),
    };
    assert!(rt.fail_next(SimOp::Start, fault.clone()));
    let id = rt.create(&spec("web", "n1")).await.unwrap();
    assert_eq!(rt.start(&id).await, Err(fault.clone()));
    rt.start(&id).await.unwrap();

    for _ in 0..MAX_INJECTED_FAULTS {
        assert!(rt.fail_next(SimOp::Ping, fault.clone()));
    }
    assert!(
        !rt.fail_next(SimOp::Ping, fault),
        "the fault queue is bounded"
    );
}

#[tokio::test]
async fn a_slow_subscriber_is_told_it_lagged() {
    let rt = sim();
    let mut events = rt.events(&Labels::new()).await.unwrap();
    let id = rt.create(&spec("web", "n1")).await.unwrap();
    for _ in 0..EVENT_BUFFER {
        rt.start(&id).await.unwrap();
        rt.stop(&id, Duration::ZERO).await.unwrap();
    }
    let mut lagged = None;
    while let Some(item) = events.next().await {
        if let Err(e) = item {
            lagged = Some(e);
        }
    }
    assert!(matches!(lagged, Some(RuntimeError::EventsLagged { dropped }) if dropped > 0));
}

#[tokio::test]
async fn latency_delays_calls() {
    let rt = sim();
    rt.set_latency(Duration::from_millis(50));
    let t = std::time::Instant::now();
    rt.ping().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(50));
}

#[tokio::test]
async fn spec_is_kept_for_assertions_and_validated() {
    let rt = sim();
    let mut s = spec("web", "n1");
    s.mem_limit = Some(64 << 20);
    let id = rt.create(&s).await.unwrap();
    assert_eq!(rt.spec_of(&id), Some(s.clone()));
    s.name = "bad name".into();
    assert!(matches!(
        rt.create(&s).await,
        Err(RuntimeError::InvalidSpec(_))
    ));
}

#[tokio::test]
async fn usable_as_a_trait_object() {
    let rt: std::sync::Arc<dyn ContainerRuntime> = std::sync::Arc::new(sim());
    let id = rt.run(&spec("web", "n1")).await.unwrap();
    assert_eq!(
        rt.inspect(&id).await.unwrap().unwrap().state,
        ContainerState::Running
    );
    assert_eq!(rt.endpoint(), "sim:n1");
}
