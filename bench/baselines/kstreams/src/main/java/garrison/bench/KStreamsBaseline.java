package garrison.bench;

import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.StoreBuilder;
import org.apache.kafka.streams.state.Stores;

import sun.misc.Signal;

/**
 * Kafka Streams baseline for the garrison benchmark.
 *
 * <p>Usage: {@code java -jar kstreams-baseline.jar --bootstrap HOST:PORT --input TOPIC
 * --output TOPIC --group GROUP --state-dir DIR --partitions P
 * [--guarantee at_least_once|exactly_once]} plus optional tuning flags
 * {@code --threads N}, {@code --commit-interval-ms MS}, {@code --cache-bytes B},
 * {@code --session-timeout-ms MS}.
 *
 * <p>Topology (Processor API, so no repartition topic): source(input) -> fold processor with a
 * persistent RocksDB key-value store (changelog on, caching on) keyed by
 * tenant\0machine\0instance -> sink(output). Records stay keyed by tenant: every record of a
 * tenant is in one input partition, so one task's local store sees all of that tenant's
 * instances.
 *
 * <p>Prints {@code ready} on stdout once the instance first reaches RUNNING; logs (WARN and up)
 * go to stderr. SIGTERM/SIGINT close the Streams instance (8 s budget) and exit 0.
 */
public final class KStreamsBaseline {

    static final String STORE = "instance-state";

    private KStreamsBaseline() {
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = parseArgs(argv);
        String bootstrap = required(args, "bootstrap");
        String input = required(args, "input");
        String output = required(args, "output");
        String group = required(args, "group");
        String stateDir = required(args, "state-dir");
        required(args, "partitions"); // the input topic's partition count; Streams reads it itself
        String guarantee = args.getOrDefault("guarantee", "exactly_once");

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, group);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        switch (guarantee) {
            case "exactly_once":
                props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
                break;
            case "at_least_once":
                props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
                break;
            default:
                usage("--guarantee must be at_least_once or exactly_once, not " + guarantee);
        }
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(args.getOrDefault("threads", "1")));
        // Unset = Kafka Streams' own default: 100 ms under exactly_once_v2, 30000 ms under at_least_once.
        if (args.containsKey("commit-interval-ms")) {
            props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Long.parseLong(args.get("commit-interval-ms")));
        }
        // Unset = Kafka Streams' default record cache of 10 MiB shared by the threads.
        if (args.containsKey("cache-bytes")) {
            props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, Long.parseLong(args.get("cache-bytes")));
        }
        // Unset = the consumer default of 45000 ms: how long a SIGKILLed member holds its
        // partitions before a restarted instance gets them.
        if (args.containsKey("session-timeout-ms")) {
            props.put(StreamsConfig.consumerPrefix("session.timeout.ms"), Integer.parseInt(args.get("session-timeout-ms")));
        }
        props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");

        KafkaStreams streams = new KafkaStreams(buildTopology(input, output), props);

        PrintStream out = System.out;
        AtomicBoolean announced = new AtomicBoolean(false);
        CountDownLatch stop = new CountDownLatch(1);
        AtomicBoolean failed = new AtomicBoolean(false);
        streams.setStateListener((newState, oldState) -> {
            if (newState == KafkaStreams.State.RUNNING && announced.compareAndSet(false, true)) {
                out.println("ready");
                out.flush();
            } else if (newState == KafkaStreams.State.ERROR) {
                failed.set(true);
                stop.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(exc -> {
            System.err.println("kstreams-baseline: stream thread failed: " + exc);
            exc.printStackTrace();
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
                    .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });

        // Own the signals instead of shutdown hooks, so a SIGTERM closes Streams in order and
        // the process exits 0 (not 143).
        Signal.handle(new Signal("TERM"), sig -> stop.countDown());
        Signal.handle(new Signal("INT"), sig -> stop.countDown());

        streams.start();
        stop.await();
        streams.close(Duration.ofSeconds(8));
        System.exit(failed.get() ? 1 : 0);
    }

    static Topology buildTopology(String input, String output) {
        StoreBuilder<KeyValueStore<String, byte[]>> store = Stores
                .keyValueStoreBuilder(Stores.persistentKeyValueStore(STORE), Serdes.String(), Serdes.ByteArray())
                .withCachingEnabled()
                .withLoggingEnabled(new HashMap<>());
        Topology topology = new Topology();
        topology.addSource("input", new ByteArrayDeserializer(), new ByteArrayDeserializer(), input);
        topology.addProcessor("fold", FoldProcessor::new, "input");
        topology.addStateStore(store, "fold");
        topology.addSink("output", output, new ByteArraySerializer(), new ByteArraySerializer(), "fold");
        return topology;
    }

    static Map<String, String> parseArgs(String[] argv) {
        Map<String, String> args = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            String a = argv[i];
            if (!a.startsWith("--")) {
                usage("unexpected argument " + a);
            }
            String name = a.substring(2);
            String value;
            int eq = name.indexOf('=');
            if (eq >= 0) {
                value = name.substring(eq + 1);
                name = name.substring(0, eq);
            } else {
                if (i + 1 >= argv.length) {
                    usage("--" + name + " needs a value");
                }
                value = argv[++i];
            }
            args.put(name, value);
        }
        return args;
    }

    static String required(Map<String, String> args, String name) {
        String v = args.get(name);
        if (v == null || v.isEmpty()) {
            usage("--" + name + " is required");
        }
        return v;
    }

    static void usage(String problem) {
        System.err.println("kstreams-baseline: " + problem);
        System.err.println("usage: java -jar kstreams-baseline.jar --bootstrap HOST:PORT --input TOPIC --output TOPIC"
                + " --group GROUP --state-dir DIR --partitions P [--guarantee at_least_once|exactly_once]"
                + " [--threads N] [--commit-interval-ms MS] [--cache-bytes B] [--session-timeout-ms MS]");
        System.exit(2);
    }

    static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }
}
