from thumbnail_service.server import serve

serve()
