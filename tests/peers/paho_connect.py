"""Connects to an MQTT broker with paho-mqtt, for Fieldlink's interop tests.

Usage: paho_connect.py HOST PORT CLIENT_ID USERNAME PASSWORD VERSION [TOPIC PAYLOAD]

VERSION is 4 (MQTT 3.1.1) or 5. Prints `connack N` with the CONNACK reason
code as a number; when connected and TOPIC is given, publishes PAYLOAD at
QoS 1 and prints `puback N`. Exits 0 whenever the broker answered.
"""

import sys
import threading

import paho.mqtt.client as mqtt

host, port, client_id, username, password, version = sys.argv[1:7]
publish = sys.argv[7:9]
protocol = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311

done = threading.Event()
answered = threading.Event()
result = {}


def on_connect(client, userdata, flags, reason_code, properties):
    result.setdefault("connack", reason_code.value)
    if reason_code.is_failure:
        # No automatic retry: one refusal is the answer.
        client.disconnect()
    answered.set()


def on_publish(client, userdata, mid, reason_code, properties):
    result["puback"] = reason_code.value
    done.set()


def on_disconnect(client, userdata, flags, reason_code, properties):
    done.set()


client = mqtt.Client(
    mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
)
client.username_pw_set(username, password)
client.on_connect = on_connect
client.on_publish = on_publish
client.on_disconnect = on_disconnect
client.connect(host, int(port), keepalive=30)
client.loop_start()
answered.wait(10)
if publish and result.get("connack") == 0:
    client.publish(publish[0], publish[1].encode(), qos=1)
    done.wait(10)
client.disconnect()
client.loop_stop()
print("connack", result.get("connack", "none"))
if publish:
    print("puback", result.get("puback", "none"))
sys.stdout.flush()
