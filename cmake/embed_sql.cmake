# Turns SQL_DIR's files into a C source (OUT) defining the tables declared in
# common/migrate.h: sql/migrations/NNN_name.sql in version order
# (migrate_embedded) and sql/functions/NAME.sql in name order, the order they
# are applied in (migrate_functions). Bytes are written as hex so no SQL text
# ever needs escaping.
set(body "/* Generated from sql/ by cmake/embed_sql.cmake; do not edit. */\n")
string(APPEND body "#include \"migrate.h\"\n\n")
set(n 0)

# embed(FILE VERSION TABLE_VAR): appends FILE's bytes and its table row.
macro(embed f version table_var)
  get_filename_component(name ${f} NAME_WE)
  file(READ ${f} hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
  string(APPEND body "static const unsigned char sql_${n}[] = {${hex}0x00};\n")
  string(APPEND ${table_var} "    {${version}, \"${name}\", (const char *)sql_${n}},\n")
  math(EXPR n "${n} + 1")
endmacro()

file(GLOB MIGRATIONS ${SQL_DIR}/migrations/[0-9][0-9][0-9]_*.sql)
list(SORT MIGRATIONS)
file(GLOB FUNCTIONS ${SQL_DIR}/functions/*.sql)
list(SORT FUNCTIONS)
if(NOT MIGRATIONS OR NOT FUNCTIONS)
  message(FATAL_ERROR "embed_sql: no sql/migrations/NNN_*.sql or no sql/functions/*.sql")
endif()

set(schema "")
foreach(f IN LISTS MIGRATIONS)
  get_filename_component(name ${f} NAME_WE)
  string(SUBSTRING ${name} 0 3 version)
  string(REGEX REPLACE "^0+([0-9])" "\\1" version "${version}")
  embed(${f} ${version} schema)
endforeach()
list(LENGTH MIGRATIONS n_schema)

set(functions "")
foreach(f IN LISTS FUNCTIONS)
  embed(${f} 0 functions)
endforeach()
list(LENGTH FUNCTIONS n_functions)

string(APPEND body "\nconst struct migration migrate_embedded[] = {\n${schema}};\n")
string(APPEND body "const size_t migrate_embedded_count = ${n_schema};\n")
string(APPEND body "\nconst struct migration migrate_functions[] = {\n${functions}};\n")
string(APPEND body "const size_t migrate_functions_count = ${n_functions};\n")
string(APPEND body "\nconst struct migrate_set migrate_embedded_set = {\n"
                   "    migrate_embedded, ${n_schema}, migrate_functions, ${n_functions}};\n")
file(WRITE ${OUT}.tmp "${body}")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
file(REMOVE ${OUT}.tmp)
