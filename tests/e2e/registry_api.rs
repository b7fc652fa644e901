//! The HTTP API's shapes, field by field, against a scenario with known devices.

use serde_json::json;

use crate::support::*;

/// Public: 2 operating (mining, modbus-tcp; 1 reporting, 1 online), 1 processing
/// robot (opc-ua, reporting). Private: 1 mobile AGV (modbus-tcp, reporting, online),
/// 1 other gas detector (mqtt-json, silent).
async fn scenario(registry: &TestRegistry) {
    let t = now();
    let mut public = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-pub", "s")
        .await
        .unwrap();
    let mut batch = announce_batch(vec![
        announce("mine-1", "operating", "mining", "modbus-tcp"),
        announce("mine-2", "operating", "mining", "modbus-tcp"),
        announce("robot-1", "processing", "robots", "opc-ua"),
    ]);
    batch.statuses = vec![online("mine-1", t)];
    public.send(batch).await.unwrap();
    public
        .send(telemetry_batch(vec![
            points("mine-1", &[t, t - NANOS]),
            points("robot-1", &[t]),
        ]))
        .await
        .unwrap();
    let mut private = Gateway::connect(&registry.grpc, PRIVATE_TOKEN, "gw-priv", "s")
        .await
        .unwrap();
    let mut batch = announce_batch(vec![
        announce("agv-1", "mobile", "logistics", "modbus-tcp"),
        announce("gas-1", "other", "safety", "mqtt-json"),
    ]);
    batch.statuses = vec![online("agv-1", t)];
    batch.telemetry = vec![points("agv-1", &[t])];
    private.send(batch).await.unwrap();
    // Keep the gateways' sessions up for the online figures.
    std::mem::forget(public);
    std::mem::forget(private);
}

#[tokio::test]
async fn summary_has_every_figure_by_class_and_cloud() {
    let registry = TestRegistry::start("").await;
    scenario(&registry).await;
    let s = registry.summary(None).await;
    let today = fieldlink_model::Day::today(fieldlink_model::UtcOffset::CHINA).to_string();
    assert_eq!(
        s,
        json!({
            "day": today,
            "timezone": "+08:00",
            "registered": {
                "total": 5,
                "by_class": {"operating": 2, "processing": 1, "mobile": 1, "other": 1},
                "by_cloud": {"public": 3, "private": 2}
            },
            "online": {
                "total": 2,
                "by_class": {"operating": 1, "processing": 0, "mobile": 1, "other": 0},
                "by_cloud": {"public": 1, "private": 1}
            },
            "reporting": {
                "total": 3,
                "by_class": {"operating": 1, "processing": 1, "mobile": 1, "other": 0},
                "by_cloud": {"public": 2, "private": 1}
            },
            "protocols": {
                "adapted": 3,
                "list": ["modbus-tcp", "opc-ua", "mqtt-json"],
                "supported": ["modbus-tcp", "opc-ua"]
            }
        })
    );
    registry.stop().await;
}

#[tokio::test]
async fn counts_group_by_any_dimensions() {
    let registry = TestRegistry::start("").await;
    scenario(&registry).await;
    let (status, c) = registry.get("/api/v1/counts?group_by=category,cloud").await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["group_by"], json!(["category", "cloud"]));
    assert_eq!(
        c["rows"],
        json!([
            {"category": "mining", "cloud": "public", "registered": 2, "online": 1, "reporting": 1},
            {"category": "robots", "cloud": "public", "registered": 1, "online": 0, "reporting": 1},
            {"category": "logistics", "cloud": "private", "registered": 1, "online": 1, "reporting": 1},
            {"category": "safety", "cloud": "private", "registered": 1, "online": 0, "reporting": 0},
        ])
    );
    let (_, c) = registry.get("/api/v1/counts?group_by=protocol").await;
    assert_eq!(
        c["rows"],
        json!([
            {"protocol": "modbus-tcp", "registered": 3, "online": 2, "reporting": 2},
            {"protocol": "opc-ua", "registered": 1, "online": 0, "reporting": 1},
            {"protocol": "mqtt-json", "registered": 1, "online": 0, "reporting": 0},
        ])
    );
    // By class alone, every class is listed.
    let (_, c) = registry.get("/api/v1/counts?group_by=class").await;
    let classes: Vec<_> = c["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["class"].clone())
        .collect();
    assert_eq!(classes, ["operating", "processing", "mobile", "other"]);
    registry.stop().await;
}

#[tokio::test]
async fn device_list_in_json_and_csv_with_day_figures() {
    let registry = TestRegistry::start("").await;
    scenario(&registry).await;
    let (status, list) = registry.get("/api/v1/devices").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["count"], 5);
    let first = &list["devices"][0];
    assert_eq!(first["device_id"], "agv-1");
    for (field, value) in [
        ("class", json!("mobile")),
        ("category", json!("logistics")),
        ("type", json!("type-of-logistics")),
        ("name", json!("name of agv-1")),
        ("protocol", json!("modbus-tcp")),
        ("tenant", json!("plant")),
        ("cloud", json!("private")),
        ("online", json!(true)),
    ] {
        assert_eq!(first[field], value, "{field}");
    }
    assert!(first["first_seen"].as_str().unwrap().ends_with("+08:00"));
    assert!(first["last_seen"].is_string());
    assert!(first.get("points").is_none(), "day figures only with day=");

    let (_, list) = registry
        .get("/api/v1/devices?class=operating&reporting=true")
        .await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["devices"][0]["device_id"], "mine-1");

    let today = fieldlink_model::Day::today(fieldlink_model::UtcOffset::CHINA);
    let (_, list) = registry
        .get(&format!("/api/v1/devices?day={today}&category=mining"))
        .await;
    assert_eq!(list["devices"][0]["points"], 2);
    assert_eq!(list["devices"][1]["points"], 0);
    assert_eq!(list["day"], today.to_string());

    let (status, csv) = get_text(&format!(
        "{}/api/v1/devices?format=csv&cloud=private",
        registry.http
    ))
    .await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "device_id,class,category,type,name,protocol,tenant,cloud,first_seen,last_seen,online"
    );
    assert_eq!(lines.len(), 3);
    assert!(lines[1].starts_with(
        "agv-1,mobile,logistics,type-of-logistics,name of agv-1,modbus-tcp,plant,private,"
    ));
    assert!(lines[1].ends_with(",true"));
    assert!(lines[2].starts_with("gas-1,other,safety,"));
    assert!(
        lines[2].ends_with(",,false"),
        "never seen: empty last_seen: {}",
        lines[2]
    );

    // Paging.
    let (_, page) = registry.get("/api/v1/devices?limit=2").await;
    assert_eq!(page["count"], 2);
    assert_eq!(page["next_after"], "gas-1");
    let (_, page) = registry.get("/api/v1/devices?limit=2&after=gas-1").await;
    assert_eq!(page["devices"][0]["device_id"], "mine-1");
    registry.stop().await;
}

#[tokio::test]
async fn device_detail_and_running_log() {
    let registry = TestRegistry::start("").await;
    scenario(&registry).await;
    let (status, d) = registry.get("/api/v1/devices/mine-1").await;
    assert_eq!(status, 200);
    assert_eq!(d["gateway_id"], "gw-pub");
    assert_eq!(d["status"]["reason"], "connected");
    assert_eq!(d["online"], true);
    let (status, days) = registry.get("/api/v1/devices/mine-1/days").await;
    assert_eq!(status, 200);
    assert_eq!(days["timezone"], "+08:00");
    assert_eq!(days["days"].as_array().unwrap().len(), 1);
    assert_eq!(days["days"][0]["points"], 2);
    let (status, err) = registry.get("/api/v1/devices/nope/days").await;
    assert_eq!(status, 404);
    assert_eq!(err["error"], "unknown device `nope`");
    registry.stop().await;
}

#[tokio::test]
async fn bad_parameters_get_a_400_naming_them() {
    let registry = TestRegistry::start("").await;
    for (path, needle) in [
        (
            "/api/v1/summary?day=2026-02-30",
            "day: invalid day `2026-02-30`",
        ),
        (
            "/api/v1/summary?day=1999-01-01",
            "day: 1999-01-01 is before the retention window",
        ),
        (
            "/api/v1/summary?date=2026-01-01",
            "unknown parameter `date`",
        ),
        (
            "/api/v1/counts?group_by=class,colour",
            "group_by: unknown dimension `colour`",
        ),
        (
            "/api/v1/counts?group_by=class,class",
            "group_by: `class` is listed twice",
        ),
        (
            "/api/v1/devices?class=factory",
            "class: unknown class `factory`",
        ),
        (
            "/api/v1/devices?cloud=hybrid",
            "cloud: unknown cloud `hybrid`",
        ),
        (
            "/api/v1/devices?online=yes",
            "online: `yes` is not true or false",
        ),
        (
            "/api/v1/devices?format=xml",
            "format: `xml` is not json or csv",
        ),
        ("/api/v1/devices?limit=0", "limit: must be at least 1"),
        ("/api/v1/devices?limit=many", "limit: invalid digit"),
        (
            "/api/v1/devices/x/days?from=2026-11-20&to=2026-11-10",
            "to: 2026-11-10 is before from",
        ),
    ] {
        let (status, body) = registry.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{path}: {message}");
    }
    let (status, body) = registry.get("/api/v2/summary").await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (404, "no such endpoint `/api/v2/summary`")
    );
    let (status, text) = get_text(&format!("{}/healthz", registry.http)).await;
    assert_eq!((status, text.trim()), (200, "ok"));
    registry.stop().await;
}

#[tokio::test]
async fn paging_continues_exactly_across_chunk_boundaries() {
    let registry = TestRegistry::start("").await;
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw", "s")
        .await
        .unwrap();
    let devices = (0..1030)
        .map(|i| announce(&format!("dev-{i:05}"), "other", "safety", "modbus-tcp"))
        .collect();
    gw.send(announce_batch(devices)).await.unwrap();
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let (_, page) = registry
            .get(&format!("/api/v1/devices?limit=512&after={after}"))
            .await;
        for d in page["devices"].as_array().unwrap() {
            seen.push(d["device_id"].as_str().unwrap().to_owned());
        }
        match page["next_after"].as_str() {
            Some(next) => {
                assert_eq!(next, seen.last().unwrap().as_str());
                after = next.to_owned();
            }
            None => break,
        }
    }
    let expected: Vec<String> = (0..1030).map(|i| format!("dev-{i:05}")).collect();
    assert_eq!(seen, expected);
    registry.stop().await;
}
