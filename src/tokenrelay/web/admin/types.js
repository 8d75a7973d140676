// @ts-check
// The admin API's JSON shapes, as the dashboard reads them (types only: see
// server/admin_schema.py and store/stats.py for the source of truth).
/** @typedef {{message?: string, type?: string, code?: string | null, param?: string | null}} ErrorBody */
/**
 * @typedef {{id: string, name: string, prefix: string, models: string[] | null,
 *   rpm: number | null, tpm: number | null, max_concurrent: number | null,
 *   budget_usd: number | null, budget_period: string, expires_at: string | null,
 *   created_at: string, revoked_at: string | null, status: string}} Key
 */
/**
 * @typedef {{key_id: string, spend_usd: number, total_spend_usd: number,
 *   requests: number, last_used_at: string | null, period_start: string | null}} Spend
 */
/**
 * @typedef {{requests: number, input_tokens: number, output_tokens: number,
 *   cost_usd: number, cached_tokens: number, cache_hit_rate: number | null,
 *   cache_saved_usd: number, errors: number, client_ended: number, error_rate: number | null,
 *   ttft_p50_ms: number | null, ttft_p95_ms: number | null}} Totals
 */
/** @typedef {{model: string, totals: Totals, series: Record<string, (number | null)[]>}} ModelStats */
/** @typedef {{bucket: string, buckets: string[], totals: Totals, models: ModelStats[]}} Stats */

export {};
