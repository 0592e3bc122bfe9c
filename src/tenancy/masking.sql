/*
 * tenancy, first part: what the application role sees of URLs and templates
 * that may hold credentials (rules in src/tenancy/masking.c).  Declared
 * before the modules whose *_public views use them; the rest of tenancy
 * comes last (tenancy.sql).
 */

-- The URL with credentials, query values and secret-looking path segments as ***.
CREATE FUNCTION revenue_engine.mask_url(url text)
RETURNS text
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_mask_url_sql';
COMMENT ON FUNCTION revenue_engine.mask_url(text) IS
    'the URL without what could authenticate a request: user info, query values, fragment and path segments that are not plain words as ***; NULL stays NULL';

-- The JSON with every string value as ***.
CREATE FUNCTION revenue_engine.mask_json(doc jsonb)
RETURNS jsonb
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 're_mask_json';
COMMENT ON FUNCTION revenue_engine.mask_json(jsonb) IS
    'the JSON document with every string value as ***, keys, numbers, booleans and nulls kept; NULL stays NULL';

REVOKE ALL ON FUNCTION revenue_engine.mask_url(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION revenue_engine.mask_json(jsonb) FROM PUBLIC;
-- Functions in a view run as the one who reads it.
GRANT EXECUTE ON FUNCTION revenue_engine.mask_url(text), revenue_engine.mask_json(jsonb)
  TO revenue_engine_user;
