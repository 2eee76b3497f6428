package garrison.bench;

import java.io.IOException;
import java.time.Instant;

import com.fasterxml.jackson.core.JsonEncoding;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.util.ByteArrayBuilder;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Per event: parse the CloudEvent JSON, read the state of (tenant, machine, instance) from the
 * RocksDB store (absent = zeros), fold count += 1, total += data.amount, last = id, write it
 * back and forward one output record keyed by tenant:
 * {"tenant","machine","instance","seq","event_id","prev","state","time_ms"}.
 */
final class FoldProcessor implements Processor<byte[], byte[], byte[], byte[]> {

    private static final ObjectMapper MAPPER = new ObjectMapper();
    private static final JsonFactory FACTORY = MAPPER.getFactory();

    private ProcessorContext<byte[], byte[]> context;
    private KeyValueStore<String, byte[]> store;
    private long skipped;

    @Override
    public void init(ProcessorContext<byte[], byte[]> context) {
        this.context = context;
        this.store = context.getStateStore(KStreamsBaseline.STORE);
    }

    @Override
    public void process(Record<byte[], byte[]> record) {
        JsonNode event;
        try {
            event = record.value() == null ? null : MAPPER.readTree(record.value());
        } catch (IOException exc) {
            event = null;
        }
        if (event == null || !event.isObject()) {
            skip("record is not a JSON object");
            return;
        }
        String tenant = event.path("tenant").asText(null);
        String machine = event.path("machine").asText(null);
        String instance = event.path("instance").asText(null);
        String id = event.path("id").asText(null);
        if (tenant == null || machine == null || instance == null || id == null) {
            skip("event lacks tenant, machine, instance or id");
            return;
        }
        long amount = event.path("data").path("amount").asLong(0L);
        long timeMs;
        JsonNode time = event.get("time");
        try {
            timeMs = time != null && time.isTextual() ? Instant.parse(time.asText()).toEpochMilli() : record.timestamp();
        } catch (RuntimeException exc) {
            skip("bad time " + time);
            return;
        }

        String storeKey = tenant + '\u0000' + machine + '\u0000' + instance;
        byte[] old = store.get(storeKey);
        long count = 0;
        long total = 0;
        String last = "";
        if (old != null) {
            try {
                JsonNode prev = MAPPER.readTree(old);
                count = prev.path("count").asLong();
                total = prev.path("total").asLong();
                last = prev.path("last").asText("");
            } catch (IOException exc) {
                throw new IllegalStateException("corrupt state for " + storeKey, exc);
            }
        }
        long newCount = count + 1;
        long newTotal = total + amount;

        byte[] state;
        byte[] out;
        try {
            state = stateJson(newCount, newTotal, id);
            ByteArrayBuilder buf = new ByteArrayBuilder(256);
            try (JsonGenerator g = FACTORY.createGenerator(buf, JsonEncoding.UTF8)) {
                g.writeStartObject();
                g.writeStringField("tenant", tenant);
                g.writeStringField("machine", machine);
                g.writeStringField("instance", instance);
                g.writeNumberField("seq", newCount);
                g.writeStringField("event_id", id);
                g.writeFieldName("prev");
                if (old == null) {
                    g.writeNull();
                } else {
                    writeState(g, count, total, last);
                }
                g.writeFieldName("state");
                writeState(g, newCount, newTotal, id);
                g.writeNumberField("time_ms", timeMs);
                g.writeEndObject();
            }
            out = buf.toByteArray();
        } catch (IOException exc) {
            throw new IllegalStateException(exc);
        }
        store.put(storeKey, state);
        byte[] key = record.key() != null ? record.key() : KStreamsBaseline.utf8(tenant);
        context.forward(record.withKey(key).withValue(out));
    }

    private static byte[] stateJson(long count, long total, String last) throws IOException {
        ByteArrayBuilder buf = new ByteArrayBuilder(64);
        try (JsonGenerator g = FACTORY.createGenerator(buf, JsonEncoding.UTF8)) {
            writeState(g, count, total, last);
        }
        return buf.toByteArray();
    }

    private static void writeState(JsonGenerator g, long count, long total, String last) throws IOException {
        g.writeStartObject();
        g.writeNumberField("count", count);
        g.writeNumberField("total", total);
        g.writeStringField("last", last);
        g.writeEndObject();
    }

    private void skip(String why) {
        // Log the first bad record only; nothing per event.
        if (skipped++ == 0) {
            System.err.println("kstreams-baseline: skipping a bad input record (" + why
                    + "); further ones are skipped silently");
        }
    }
}
