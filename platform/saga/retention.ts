/**
 * The saga tables' retention tasks (platform/retention.ts): finished sagas (never running,
 * compensating or parked ones), their steps first, `SAGA_RETENTION_MS` after they were created
 * and last changed.
 */
import { config } from "../config";
import type { RetentionTask } from "../retention";

export function sagaRetentionTasks(): RetentionTask[] {
	const finished = `SELECT id FROM sagas WHERE status IN ('COMPLETED','COMPENSATED')
				AND created_at < now() - $2::float8 * interval '1 millisecond'
				AND updated_at < now() - $2::float8 * interval '1 millisecond'`;
	const windowMs = config().retention.sagaMs;
	return [
		{
			table: "saga_steps",
			sql: `DELETE FROM saga_steps WHERE id IN (SELECT id FROM saga_steps
					WHERE saga_id IN (${finished}) LIMIT $1)`,
			windowMs
		},
		{
			table: "sagas",
			sql: `DELETE FROM sagas WHERE id IN (${finished} ORDER BY created_at LIMIT $1)`,
			windowMs
		}
	];
}
